"""One CPU-bound competitor process for the "loaded" cells of the benchmarks (issue 18)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def busy_process(enabled: bool = True) -> Iterator[None]:
    """While the block runs, a pure-Python busy loop (one core's worth of work) runs beside it."""
    if not enabled:
        yield
        return
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    time.sleep(1.0)  # running before the measurement starts
    try:
        yield
    finally:
        busy.kill()
        busy.wait()
