"""The Python API: `from latentdiff import Run`, stage methods with typed results, readers, Run.open."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from latentdiff.errors import LatentDiffError, NotARunDirectory, StageNotAvailable, StageNotDone
from latentdiff.results import HarvestResult, IndexResult, LabelResult, SampleResult, SelectResult, TrainResult
from tests.conftest import small_run_config


def test_import_is_cheap_and_exports_run() -> None:
    code = (
        "import sys, latentdiff; assert 'torch' not in sys.modules, 'torch imported'; "
        "from latentdiff import Run, RunConfig; from latentdiff.run import Run as R; assert Run is R; "
        "assert 'torch' not in sys.modules, 'torch imported by Run'; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_stage_methods_chain_and_return_typed_results(core_run, tmp_path: Path) -> None:
    from latentdiff import Run

    d = tmp_path / "run"
    shutil.copytree(core_run.dir, d)
    run = Run(small_run_config(d))
    run.show_progress = False
    before = (d / "latents.parquet").stat().st_mtime_ns

    harvest = run.harvest()  # up to date: only reads
    assert isinstance(harvest, HarvestResult) and harvest.mode == "cache" and harvest.train is not None
    assert harvest.train.n_tokens >= 12_000 and harvest.heldout.n_tokens >= 4_000
    assert harvest.heldout.models == ["base", "it", "shift"] and harvest.layer == harvest.heldout.layer
    train = run.train()
    assert isinstance(train, TrainResult) and list(train.crosscoders) == ["joint"]
    joint = train.crosscoders["joint"]
    assert joint.models == ["base", "it", "shift"] and joint.dict_size == 256 and joint.k == 8
    assert joint.final_metrics["step"] == 40 and {"fvu_base", "fvu_it", "fvu_shift"} <= set(joint.final_metrics)
    select = run.select()
    assert isinstance(select, SelectResult) and select.method == "rank"
    assert set(select.sides) == {"it", "shift"} and sum(select.sides["it"].values()) == 256
    sample = run.sample()
    assert isinstance(sample, SampleResult) and sample.examples["joint"] > 0
    assert (d / "latents.parquet").stat().st_mtime_ns == before  # nothing was recomputed
    assert run.status() == {
        **dict.fromkeys(("harvest", "train", "select", "sample"), "done"),
        **dict.fromkeys(("inspect", "index", "label", "aggregate", "report"), "pending"),
    }

    rows = run.latent_stats()
    assert len(rows) == 2 * 256
    ft = run.latent_stats(pair="shift", side="finetuned")
    assert ft and len(ft) == select.sides["shift"]["finetuned"]
    assert all(r.pair == "shift" and r.side == "finetuned" and r.crosscoder == "joint" for r in ft)
    key = f"joint:{ft[0].latent}"
    examples = run.examples(key)
    assert examples and {e.latent for e in examples} == {ft[0].latent}
    assert {e.kind for e in examples} >= {"top", "negative"}
    assert run.examples(key, kind="top") == [e for e in examples if e.kind == "top"]
    assert run.examples("joint:100000") == []

    cc = run.crosscoder()
    assert cc.spec.dict_size == 256 and cc.spec.model_names == ["base", "it", "shift"]
    assert run.crosscoder("joint").spec == cc.spec
    metrics = run.training_metrics()
    assert [m["step"] for m in metrics] == [10, 20, 30, 40] and metrics[-1] == joint.final_metrics


def test_reading_an_unfinished_stage_names_the_stage(core_run, tmp_path: Path) -> None:
    from latentdiff import Run

    run = Run(small_run_config(tmp_path / "empty"))
    for read, stage in (
        (run.latent_stats, "select"),
        (run.findings, "label"),
        (run.aggregate_result, "aggregate"),
        (run.report_result, "report"),
        (run.training_metrics, "train"),
        (run.crosscoder, "train"),
        (lambda: run.examples("joint:1"), "sample"),
        (lambda: run.result("harvest"), "harvest"),
    ):
        with pytest.raises(StageNotDone) as err:
            read()
        msg = str(err.value)
        assert "\n" not in msg and f"stage '{stage}' is not done" in msg and f"run.{stage}()" in msg
    # done, but with other settings: not done for this run
    other = Run(small_run_config(core_run.dir, selection={"method": "rank", "top_n": 3}))
    with pytest.raises(StageNotDone, match="stage 'select' is not done"):
        other.latent_stats()
    core = Run(small_run_config(core_run.dir))
    with pytest.raises(StageNotAvailable, match="unknown stage 'nope'"):
        core.result("nope")
    with pytest.raises(LatentDiffError, match="CROSSCODER:ID"):
        core.examples("812")
    with pytest.raises(LatentDiffError, match="crosscoder 'pair' is not part of this run; crosscoders: joint"):
        core.examples("pair:812")
    with pytest.raises(LatentDiffError, match="crosscoders: joint"):
        core.crosscoder("it")


def test_open_reads_the_saved_config(core_run, tmp_path: Path) -> None:
    from latentdiff import Run

    with pytest.raises(NotARunDirectory, match="no such run directory"):
        Run.open(tmp_path / "missing")
    with pytest.raises(NotARunDirectory, match=r"not a latentdiff run directory \(no config.yaml\)"):
        Run.open(tmp_path)
    moved = tmp_path / "moved"
    shutil.copytree(core_run.dir, moved)  # stage-by-stage runs save config.yaml too; runs can move
    run = Run.open(moved)
    assert run.dir == moved and run.cfg.crosscoder == core_run.cfg.crosscoder
    assert run.status()["sample"] == "done" and run.select().sides == core_run.select().sides
    assert "done=['harvest', 'train', 'select', 'sample']" in repr(run)


def test_rest_of_the_pipeline_through_the_api(reported_run, tmp_path: Path) -> None:
    from latentdiff import Run
    from latentdiff.agent.aggregate import Aggregate
    from latentdiff.agent.report.schema import Report

    d = tmp_path / "run"
    shutil.copytree(reported_run.dir, d)
    shutil.rmtree(d / "report")
    for path in (d / "aggregate.json", d / "stages" / "aggregate.json", d / "stages" / "report.json"):
        path.unlink()  # aggregate and report are recomputed below, through the API
    run = Run.open(d)
    run.show_progress = False
    assert run.status()["aggregate"] == run.status()["report"] == "started"
    assert isinstance(run.index(), IndexResult) and run.index().store == str(d / "chroma")
    label = run.label()
    assert isinstance(label, LabelResult) and label.latents > 0 and label.failed == 0
    findings = run.findings()
    assert len({f.ref.key for f in findings}) == label.latents and all(f.label for f in findings)
    assert run.findings(pair="it") == [f for f in findings if f.pair == "it"]
    agg = run.aggregate()
    assert isinstance(agg, Aggregate) and agg == run.aggregate_result() and agg.n_latents == label.latents
    assert agg.headline is not None and (agg.headline.a, agg.headline.b) == ("shift", "it")
    report = run.report()
    assert isinstance(report, Report) and report == run.report_result() == run.result("report")
    on_disk = json.loads((d / "report" / "report.json").read_text())
    assert report.model_dump(mode="json") == on_disk
    assert {c.id for c in report.latents} == {f.ref.key for f in findings}
    assert set(run.status().values()) == {"done"}


def test_progress_off_a_terminal_is_periodic_log_lines(caplog: pytest.LogCaptureFixture,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 16: with output to a file, long stages report progress as log lines (with ETA), not nothing."""
    import logging

    from latentdiff.progress import LineProgress, progress

    monkeypatch.setenv("LATENTDIFF_PROGRESS", "lines")
    with caplog.at_level(logging.INFO, logger="latentdiff.progress"):
        with progress(every_s=0.0) as bar:
            assert isinstance(bar, LineProgress)
            task = bar.add_task("train", total=4, info="")
            for _ in range(3):
                bar.update(task, advance=1, info="FVU 0.1")
    lines = [r.getMessage() for r in caplog.records]
    assert any("train: 2/4 (50%)" in x and "ETA" in x and "FVU 0.1" in x for x in lines)
    assert lines[-1].startswith("train: 3/4 (75%)") and lines[-1].endswith("(done)")
