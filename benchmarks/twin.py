"""Build a twin of a finished organism family: the same base and controls, other fine-tunes.

A diagnostic (docs/organisms.md, "Session 10: trace-free twins"): to learn what one recipe change does
to the pipeline's verdicts, the twin keeps everything else fixed. The phases of `--config` that are
also in the source build with the same spec (the base, the controls) are copied from it, weights and
tokenizer included, not retrained; the others are trained on top of them with `build --only` (the
init's shipped bf16 weights cast to fp32, deterministic and resumable in `--work-dir`).

    python -m benchmarks.twin --source core/organisms/models \
        --config benchmarks/organisms/dev_notrace.yaml --out /tmp/twin/dev
    python -m benchmarks.exam --organisms /tmp/twin/dev --run-dir runs/twin-dev

Every phase name of the source that the twin redefines is retrained under the same name, so the twin
is a family of its own (its planted.json is derived from `--config`, as any build's).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from pathlib import Path

from latentdiff.cli import _organism_build_config
from latentdiff.core.organisms.build import OrganismBuildConfig, build_only, check_same_settings
from latentdiff.errors import ConfigError, LatentDiffError
from latentdiff.io import atomic_write_json


def prepare(source: Path, cfg: OrganismBuildConfig, out: Path) -> list[str]:
    """Copy the phases the twin `cfg` shares with `source` into `out`; return the phases left to train."""
    built = json.loads((source / "build_config.json").read_text())
    check_same_settings(built, cfg, source)
    mine = cfg.model_dump()
    kept = [p for p in mine["phases"] if built["phases"].get(p) == mine["phases"][p]]
    order = list(built["phases"])
    if any(list(mine["phases"]).index(p) != order.index(p) for p in kept):  # a phase's seed is its index
        raise ConfigError(f"the phases shared with {source} ({', '.join(kept)}) must keep their places in the "
                          "twin's config (a phase's seed is its index)")
    train = [p for p in mine["phases"] if p not in kept]
    out.mkdir(parents=True, exist_ok=True)
    for p in kept:
        if not (out / p / "model.safetensors").is_file():
            shutil.copytree(source / p, out / p, dirs_exist_ok=True)
    ev = json.loads((source / "eval.json").read_text())
    atomic_write_json(out / "eval.json", {
        "build": ev.get("build"), "heldout_docs_per_category": ev.get("heldout_docs_per_category"),
        "loss": {p: ev["loss"][p] for p in kept}, "plants": [],
        "twin_of": {"source": str(source.resolve()), "copied": kept}})
    atomic_write_json(out / "build_config.json", {**mine, "phases": {p: mine["phases"][p] for p in kept}})
    return train


def main(argv: list[str] | None = None) -> int:
    """Copy the shared phases, train the others, print the held-out losses."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", type=Path, required=True, help="A finished build (build_config.json inside).")
    ap.add_argument("--config", type=Path, required=True, help="The twin's build config (YAML/JSON).")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--work-dir", type=Path, default=Path(".organism-build"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = _organism_build_config(args.config)
        if (args.out / "build_config.json").is_file() and args.out.resolve() != args.source.resolve():
            done = json.loads((args.out / "build_config.json").read_text())["phases"]  # resumed
            train = [p for p in cfg.phases if p not in done]
        else:
            train = prepare(args.source, cfg, args.out)
        if train:
            build_only(train, args.out, args.work_dir, cfg)
    except LatentDiffError as exc:
        print(f"error: {exc}", file=sys.stderr)  # noqa: T201 - a benchmark's output
        return 2
    ev = json.loads((args.out / "eval.json").read_text())
    for name, losses in ev["loss"].items():
        print(name, {c: round(v, 2) for c, v in losses.items()})  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
