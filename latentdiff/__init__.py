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
