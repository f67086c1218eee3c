"""The core stages end to end on the shipped organisms (small settings), plus skip/resume logic."""

from __future__ import annotations

import json
from pathlib import Path

from latentdiff.config import build_config
from latentdiff.core.examples import read_examples
from latentdiff.core.select import read_table
from latentdiff.run import Run


def _cfg(run_dir: Path, **over):
    data = {
        "run_dir": str(run_dir),
        "models": [
            {"name": "base", "path": "organism:base", "role": "base"},
            {"name": "it", "path": "organism:it", "role": "finetune"},
            {"name": "shift", "path": "organism:shift", "role": "finetune"},
        ],
        "design": "joint",
        "data": {"n_tokens": 12_000, "n_heldout_tokens": 4_000, "ctx_len": 64},
        "harvest": {"batch_size": 16, "shard_tokens": 3_000},
        "crosscoder": {"dict_size": 256, "k": 8, "batch_size": 256, "steps": 40, "warmup_steps": 5,
                       "checkpoint_every": 20, "dead_tokens": 5_000},
        "selection": {"top_n": 20},
        "sampling": {"n_top": 3, "n_quantiles": 2, "n_per_quantile": 1, "n_negative": 2},
    }
    return build_config(data | over)


def test_core_stages_end_to_end(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path / "run")
    run = Run(cfg)
    run.show_progress = False
    for stage in ("harvest", "train", "select", "sample"):
        run.stage(stage)
    d = tmp_path / "run"
    manifest = json.loads((d / "activations" / "train" / "manifest.json").read_text())
    assert manifest["complete"] and manifest["excluded"]["bos"] > 0
    assert (d / "crosscoders" / "joint" / "crosscoder.safetensors").is_file()
    metrics = [json.loads(x) for x in (d / "crosscoders" / "joint" / "metrics.jsonl").read_text().splitlines()]
    assert {"fvu_base", "fvu_it", "fvu_shift"} <= set(metrics[-1])
    rows = read_table(d / "latents.parquet")
    assert {r.pair for r in rows} == {"it", "shift"} and len(rows) == 2 * 256
    examples = list(read_examples(d / "examples" / "joint.jsonl.gz"))
    assert examples and {e.kind for e in examples} >= {"top", "negative"}
    assert all(len(e.tokens) == len(e.activations) for e in examples)
    # every stage is skipped on rerun (markers match) ...
    before = (d / "latents.parquet").stat().st_mtime_ns
    for stage in ("harvest", "train", "select", "sample"):
        run.stage(stage)
    assert (d / "latents.parquet").stat().st_mtime_ns == before
    # ... and a changed selection setting recomputes selection only
    run2 = Run(_cfg(d, selection={"top_n": 10}))
    run2.show_progress = False
    run2.stage("select")
    assert (d / "latents.parquet").stat().st_mtime_ns != before
    weights = d / "crosscoders" / "joint" / "crosscoder.safetensors"
    trained_at = weights.stat().st_mtime_ns
    run2.stage("train")  # the crosscoder does not depend on selection settings: skipped
    assert weights.stat().st_mtime_ns == trained_at
