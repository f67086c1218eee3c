"""The statistics' pipeline paths on real small runs: replicate crosscoders, the control contrast with a
control that has specific latents, the reference sample and the scaffold shares."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from latentdiff.core.examples import Example, ScaffoldTally, read_scaffold
from latentdiff.run import Run
from tests.conftest import small_run_config


def _run(core_run, tmp_path: Path, **over) -> Run:
    d = tmp_path / "run"
    shutil.copytree(core_run.dir / "activations", d / "activations")  # reuse the harvest
    shutil.copytree(core_run.dir / "stages", d / "stages")
    for marker in (d / "stages").glob("*.json"):
        if not marker.name.startswith("harvest"):
            marker.unlink()
    run = Run(small_run_config(d, **over))
    run.show_progress = False
    run.run_all()
    return run


def test_replicate_crosscoders_are_labelled_and_compared(core_run, tmp_path: Path) -> None:
    base = small_run_config(tmp_path).crosscoder.model_dump()
    run = _run(core_run, tmp_path, crosscoder=base | {"seeds": [0, 1]})
    d = run.dir
    assert (d / "crosscoders" / "joint").is_dir() and (d / "crosscoders" / "joint-seed1").is_dir()
    w0 = (d / "crosscoders" / "joint" / "crosscoder.safetensors").read_bytes()
    assert w0 != (d / "crosscoders" / "joint-seed1" / "crosscoder.safetensors").read_bytes()
    findings = run.findings()
    assert {f.ref.crosscoder for f in findings} == {"joint", "joint-seed1"}
    agg = run.aggregate_result()
    assert agg.n_replicates == 2 and agg.replicates
    assert all(r.crosscoders == ["primary", "seed1"] for r in agg.replicates)
    report = json.loads((d / "report" / "report.json").read_text())
    assert report["statistics"]["n_replicates"] == 2 and report["replicates"]


def test_control_with_specific_latents_exercises_the_contrast(core_run, tmp_path: Path) -> None:
    models = [{"name": "base", "path": "organism:base", "role": "base"},
              {"name": "it", "path": "organism:it", "role": "control"},  # a control that did learn something
              {"name": "shift", "path": "organism:shift", "role": "finetune"}]
    run = _run(core_run, tmp_path, models=models, headline=None)
    agg = run.aggregate_result()
    (ctl,) = agg.control
    assert (ctl.a, ctl.b, ctl.kind) == ("shift", "it", "control")
    assert ctl.n_b > 0 and ctl.tested, ctl.note  # the control has specific latents: the arm runs
    assert all(r.ci95[0] <= r.diff_pp <= r.ci95[1] for r in ctl.categories)


def test_reference_sample_and_scaffold_shares(core_run) -> None:
    d = core_run.dir
    scaffold = read_scaffold(d / "examples")
    assert scaffold and all(0.0 <= v <= 1.0 for v in scaffold.values())
    from latentdiff import stages

    table = __import__("latentdiff.core.select", fromlist=["read_table"]).read_table(d / "latents.parquet")
    ref = stages.reference_latents(core_run.cfg, table, "joint")
    assert 0 < len(ref) <= core_run.cfg.selection.reference_n
    sides = {(r.latent, r.side) for r in table if r.latent in set(ref)}
    assert {s for _, s in sides} == {"shared"}  # shared in every pair
    assert ref == stages.reference_latents(core_run.cfg, table, "joint")  # deterministic
    assert {f"joint:{j}" for j in ref} <= set(scaffold)  # the reference latents got examples


def test_scaffold_tally() -> None:
    tally = ScaffoldTally({"<|end|>", "<|assistant|>"})
    ex = dict(ctx=0, start=0, max_act=3.0, doc_id=0)
    tally.add(Example(latent=1, kind="top", tokens=["a", "<|end|>", "<|assistant|>"], activations=[1, 3, 2], **ex))
    tally.add(Example(latent=1, kind="negative", tokens=["<|end|>"], activations=[9], **ex))
    tally.add(Example(latent=2, kind="quantile", quantile=0, tokens=["a", "b"], activations=[1, 0], **ex))
    assert tally.shares() == {1: 5 / 6, 2: 0.0}
