"""Store errors: one-line, user-facing (the CLI prints them and exits 2)."""

from __future__ import annotations

from latentdiff.errors import LatentDiffError


class StoreError(LatentDiffError):
    """The Chroma store or its embedding model is unavailable or inconsistent."""
