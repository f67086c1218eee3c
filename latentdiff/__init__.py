"""latentdiff: explain why one LLM behaves differently from another, by crosscoder model diffing.

`from latentdiff import Run` is the Python API (see latentdiff.run); names are imported lazily so
that `import latentdiff` stays cheap (no torch).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

# OpenMP threads that wait passively instead of spinning (read once, when torch loads libgomp, so it must be set
# before torch is imported): on a CPU shared with another busy process, spinning threads made each of the
# trainer's index sorts take 168 ms instead of 0.5 ms and a training step 7x slower (issue 18;
# docs/benchmarks.md "Shared CPU"). Set OMP_WAIT_POLICY yourself to override; it has no effect on CUDA kernels.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _keep_freed_memory() -> bool:
    """glibc: serve blocks up to 32 MiB from the heap and keep up to 256 MiB of freed heap (mallopt).

    By default glibc maps each large tensor (a few MiB) fresh from the kernel and unmaps it on free,
    so every training step page-faults its gradients, sparse products and Adam temporaries in again:
    the crosscoder step spent ~17 ms of 107 in first-touch copies and fills (docs/benchmarks.md,
    "Allocator"). Result-neutral (no number changes). Skipped when the user set a MALLOC_* variable
    or LATENTDIFF_MALLOC=0, and on other C libraries. Returns whether it applied.
    """
    if os.environ.get("LATENTDIFF_MALLOC", "1") == "0" or any(k.startswith("MALLOC_") for k in os.environ):
        return False
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:  # the process's own symbols: no library search at import (find_library runs ldconfig, ~10 ms)
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # musl and others: no mallopt
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # malloc.h
    return bool(mallopt(m_mmap_threshold, 32 << 20)) and bool(mallopt(m_trim_threshold, 256 << 20))


MALLOC_TUNED = _keep_freed_memory()

__version__ = "0.1.0"
__all__ = ["Run", "RunConfig", "load_config"]

if TYPE_CHECKING:
    from latentdiff.config import RunConfig, load_config
    from latentdiff.run import Run

_LAZY = {"Run": "latentdiff.run", "RunConfig": "latentdiff.config", "load_config": "latentdiff.config"}


def __getattr__(name: str) -> Any:
    """Import the public names on first use."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'latentdiff' has no attribute {name!r}")
