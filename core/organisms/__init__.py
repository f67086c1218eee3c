"""Offline model organisms: tiny Llama models with planted, known differences (the ground truth).

`base` is pretrained on neutral text; `it` (instruct role) and `shift` (SimPO role) are fine-tunes
that learn category streams the base never saw; `null` is the base trained further on its own
data (a control) and `null2` the same recipe under another seed (null vs null2 is a true null
pair). `planted.json` states which category each fine-tune gained.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from latentdiff.errors import ModelLoadError

ORGANISM_NAMES: tuple[str, ...] = ("base", "it", "shift", "null", "null2")
SHIPPED_DIR: Path = Path(__file__).resolve().parent / "models"


def organism_names(root: Path | None = None) -> tuple[str, ...]:
    """The organisms of a build, in build order (its build_config.json's phases; the shipped five)."""
    root = SHIPPED_DIR if root is None else Path(root)
    path = root / "build_config.json"
    if not path.is_file():
        return ORGANISM_NAMES
    return tuple(json.loads(path.read_text()).get("phases", {})) or ORGANISM_NAMES


def organism_dir(name: str, root: Path | None = None) -> Path:
    """Directory of a built organism (`root` defaults to the shipped models)."""
    root = SHIPPED_DIR if root is None else Path(root)
    names = organism_names(root)
    if name not in names:
        raise ModelLoadError(f"unknown organism {name!r}; choose from {', '.join(names)}")
    path = root / name
    if not (path / "config.json").is_file():
        raise ModelLoadError(
            f"organism {name!r} is not built in {root}; run `latentdiff organism build --out {root}`"
            f" (or add just it: `latentdiff organism build --only {name} --out {root}`)"
        )
    return path


def resolve_model_path(path: str) -> str:
    """Map 'organism:NAME' to the shipped directory; other paths / HF ids pass through."""
    if path.startswith("organism:"):
        return str(organism_dir(path.split(":", 1)[1]))
    return path


def organism_root(path: str) -> Path | None:
    """The build directory of a model path that is an organism ('organism:NAME', or a directory a
    build wrote: it has organism.json and its parent planted.json); None for any other model."""
    if path.startswith("organism:"):
        return SHIPPED_DIR
    local = Path(path)
    if (local / "organism.json").is_file() and (local.parent / "planted.json").is_file():
        return local.parent.resolve()
    return None


def load_planted(root: Path | None = None) -> dict[str, Any]:
    """The planted truth (`planted.json`) of the organisms in root (default: shipped)."""
    root = SHIPPED_DIR if root is None else Path(root)
    path = root / "planted.json"
    if not path.is_file():
        raise ModelLoadError(f"no planted.json in {root}; build the organisms first")
    return json.loads(path.read_text())


def load_eval(root: Path | None = None) -> dict[str, Any]:
    """Held-out loss per model and category (`eval.json`) written by the build."""
    root = SHIPPED_DIR if root is None else Path(root)
    path = root / "eval.json"
    if not path.is_file():
        raise ModelLoadError(f"no eval.json in {root}; build the organisms first")
    return json.loads(path.read_text())
