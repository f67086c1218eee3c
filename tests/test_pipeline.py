"""The core stages end to end on the shipped organisms (small settings), plus skip/resume logic."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from latentdiff.core.examples import read_examples
from latentdiff.core.select import read_table
from latentdiff.errors import StageNotAvailable
from latentdiff.run import Run
from tests.conftest import small_run_config


def test_core_stages_end_to_end(core_run) -> None:
    d = core_run.dir
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


def test_rerun_skips_and_changed_settings_recompute(core_run, tmp_path: Path) -> None:
    d = tmp_path / "run"
    shutil.copytree(core_run.dir, d)
    run = Run(small_run_config(d))
    run.show_progress = False
    before = (d / "latents.parquet").stat().st_mtime_ns
    for stage in ("harvest", "train", "select", "sample"):
        run.stage(stage)  # every marker matches: nothing recomputed
    assert (d / "latents.parquet").stat().st_mtime_ns == before
    run2 = Run(small_run_config(d, selection={"method": "rank", "top_n": 4}))
    run2.show_progress = False
    run2.stage("select")
    assert (d / "latents.parquet").stat().st_mtime_ns != before
    weights = d / "crosscoders" / "joint" / "crosscoder.safetensors"
    trained_at = weights.stat().st_mtime_ns
    run2.stage("train")  # the crosscoder does not depend on selection settings: skipped
    assert weights.stat().st_mtime_ns == trained_at


def test_metrics_plot_written(core_run) -> None:
    png = core_run.dir / "crosscoders" / "joint" / "metrics.png"
    assert png.is_file() and png.read_bytes()[:4] == b"\x89PNG"


def test_stream_mode_trains_without_a_train_cache(tmp_path: Path) -> None:
    harvest = {"mode": "stream", "batch_size": 16, "shuffle_buffer_tokens": 2048}
    cfg = small_run_config(tmp_path / "run", harvest=harvest,
                           crosscoder={"dict_size": 128, "k": 8, "batch_size": 256, "steps": 12, "warmup_steps": 2,
                                       "checkpoint_every": 5, "dead_tokens": 5_000})
    run = Run(cfg)
    run.show_progress = False
    run.stage("harvest")
    run.stage("train")
    acts = tmp_path / "run" / "activations"
    assert not list((acts / "train").glob("shard_*"))  # nothing cached for training
    assert (acts / "train" / "stats.safetensors").is_file()
    assert (tmp_path / "run" / "crosscoders" / "joint" / "crosscoder.safetensors").is_file()
    metrics = (tmp_path / "run" / "crosscoders" / "joint" / "metrics.jsonl").read_text().splitlines()
    assert json.loads(metrics[-1])["step"] == 12


def test_run_from_stage_recomputes_from_there(core_run, tmp_path: Path) -> None:
    d = tmp_path / "run"
    shutil.copytree(core_run.dir, d)
    (d / "stages" / "sample.json").unlink()  # pretend sampling was interrupted: run_all finishes it
    run = Run(small_run_config(d))
    run.show_progress = False
    weights = d / "crosscoders" / "joint" / "crosscoder.safetensors"
    trained_at = weights.stat().st_mtime_ns
    table_at = (d / "latents.parquet").stat().st_mtime_ns
    for stage in ("harvest", "train", "select", "sample"):
        run.stage(stage)
    assert (d / "latents.parquet").stat().st_mtime_ns == table_at  # select was up to date
    from latentdiff import stages

    for name in ("select", "sample"):  # what `latentdiff run CONFIG --from select` does first
        stages.invalidate(d, name)
    assert not (d / "latents.parquet").exists() and not (d / "stages" / "select.json").exists()
    run.stage("select")
    run.stage("sample")
    assert (d / "latents.parquet").is_file() and (d / "examples" / "joint.jsonl.gz").is_file()
    assert weights.stat().st_mtime_ns == trained_at  # train untouched
    with pytest.raises(StageNotAvailable, match="unknown stage 'nope'"):
        run.run_all("nope")
