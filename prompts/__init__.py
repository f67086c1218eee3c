"""latentdiff.prompts: every prompt template and the category taxonomy, shipped as package data."""

from __future__ import annotations

from importlib import resources


def read_prompt(name: str) -> str:
    """Return the text of a bundled prompt or data file (e.g. 'taxonomy.yaml')."""
    path = resources.files(__name__).joinpath(name)
    if not path.is_file():
        available = sorted(p.name for p in resources.files(__name__).iterdir() if p.is_file())
        raise FileNotFoundError(f"no bundled prompt {name!r}; available: {available}")
    return path.read_text(encoding="utf-8")
