"""The labelling stage with real judges on a real (small) organism run: the offline embedding
judge and a real CPU vLLM server. Beside the scripted-judge graph tests in test_agent.py."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from latentdiff.agent.report import REPORT_VERSION
from latentdiff.agent.state import read_findings
from latentdiff.core.select import read_table
from latentdiff.errors import LabelIncomplete, StageNotAvailable
from latentdiff.run import Run
from tests.conftest import small_run_config


def _copy_run(core_run, dest: Path, **over) -> Run:
    shutil.copytree(core_run.dir, dest)
    run = Run(small_run_config(dest, **over))
    run.show_progress = False
    return run


def _selected(run_dir: Path, cfg=None) -> set[str]:  # noqa: ANN001
    """Every latent the agent labels: the model-specific ones and (with cfg) the reference sample."""
    from latentdiff.stages import label_plan

    table = read_table(run_dir / "latents.parquet")
    if cfg is not None:
        return set(label_plan(cfg, table))
    return {f"{r.crosscoder}:{r.latent}" for r in table if r.side in ("finetuned", "base")}


def test_offline_judge_labels_every_selected_latent(core_run, tmp_path: Path) -> None:
    run = _copy_run(core_run, tmp_path / "run")
    for stage in ("index", "label", "aggregate"):
        run.stage(stage)
    findings = {f.ref.key: f for f in read_findings(run.dir)}
    assert set(findings) == _selected(run.dir, run.cfg) and findings
    assert set(findings) > _selected(run.dir)  # the reference sample is labelled too
    assert all(f.label is not None and f.label.judge == "embedding" for f in findings.values())
    agg = json.loads((run.dir / "aggregate.json").read_text())
    assert agg["headline"]["a"] == "shift" and agg["n_labelled"] == len(findings)
    assert {c["name"] for c in agg["headline"]["categories"]} >= {"safety", "multilingual", "other"}
    marker = json.loads((run.dir / "stages" / "label.json").read_text())
    assert marker["failed"] == 0 and marker["judge_calls"] > 0
    # the report stage over the same run
    run.stage("report")
    out = run.dir / "report"
    report = json.loads((out / "report.json").read_text())
    assert report["version"] == REPORT_VERSION
    summary = report["summary"]  # offline judge: the templated executive summary, checked
    assert summary["source"] == "template" and summary["checker"]["ok"] and summary["sentences"]
    assert set(summary["citations"]) <= set(findings)
    for row in report["categories"]:
        assert {"name", "n_a", "n_b", "diff_pp", "ci95", "shift_pct", "p_adjusted", "significant"} <= set(row)
    assert {lat["id"] for lat in report["latents"]} == set(findings)
    for lat in report["latents"]:
        assert {"id", "side", "name", "category", "delta_norm"} <= set(lat)
    assert report["planted"]["headline"]["a"] == "shift"  # organisms: ground truth beside the result
    page = (out / "report.html").read_text()
    # the headline table, or (small sets) its "too few latents to compare" note instead of a finding
    table_id = "id='shift-table'" if report["headline"]["status"] == "ok" else "id='shift-table-note'"
    assert table_id in page and "data:image/png;base64," in page
    # self-contained: one inline script (the latent table's filters), nothing loaded from elsewhere
    assert page.count("<script") == 1 and "<script src" not in page and "http://" not in page.split("<script>")[1]
    assert "## Headline: shift vs it" in (out / "report.md").read_text()
    assert "## Executive summary" in (out / "report.md").read_text() and "id='summary'" in page
    assert (out / "plots" / "shift.png").is_file() and (out / "plots" / "training_joint.png").is_file()


@pytest.mark.slow
def test_vllm_judge_labels_through_the_agent(core_run, vllm_server, tmp_path: Path) -> None:
    url, model = vllm_server
    run = _copy_run(core_run, tmp_path / "run",
                    judge={"spec": f"vllm:{url}@{model}", "max_tokens": 256, "timeout_s": 120, "retries": 2},
                    agent={"max_latents": 6, "concurrency": 4})
    run.stage("index")
    for _ in range(3):  # a latent whose judging failed (e.g. a CPU timeout) leaves label not done: rerun
        try:
            run.stage("label")
            break
        except LabelIncomplete as err:
            assert "judging failed" in str(err) and "\n" not in str(err)
    if run.status()["label"] == "done":
        run.stage("aggregate")
    findings = {f.ref.key: f for f in read_findings(run.dir)}
    assert len(findings) == 6, sorted(findings)
    labelled = [f for f in findings.values() if f.label is not None]
    failed = [f for f in findings.values() if f.label is None]
    assert all(f.failure for f in failed)  # every failure carries its reason
    assert labelled, [f.failure for f in failed]
    for f in labelled:
        assert f.label.judge == f"vllm:{url}@{model}"
    agg = json.loads((run.dir / "aggregate.json").read_text())  # the agent writes it at its end too
    assert len(agg["skipped"]) == len(_selected(run.dir, run.cfg)) - 6
    assert (run.dir / "judge_cache").exists()


def test_judge_server_down_is_recorded_and_the_stage_is_not_done(core_run, tmp_path: Path, monkeypatch) -> None:
    import socket

    from latentdiff.agent.judges.openai_compat import OpenAICompatJudge

    closed: list[str] = []
    aclose = OpenAICompatJudge.aclose

    async def spy(self: OpenAICompatJudge) -> None:
        closed.append(self.spec)
        await aclose(self)

    monkeypatch.setattr(OpenAICompatJudge, "aclose", spy)

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run = _copy_run(core_run, tmp_path / "run",
                    judge={"spec": f"vllm:http://127.0.0.1:{port}/v1@nobody", "retries": 1, "timeout_s": 5},
                    agent={"max_latents": 3})
    run.stage("index")
    with pytest.raises(LabelIncomplete, match="judging failed for 3 of 3 latents") as info:
        run.stage("label")
    assert "unreachable" in str(info.value) and "\n" not in str(info.value)
    assert len(closed) == 1  # the stage closed the judge it made (its HTTP clients), on its event loop
    findings = {f.ref.key: f for f in read_findings(run.dir)}
    assert len(findings) == 3 and all(f.label is None for f in findings.values())
    assert all("unreachable" in f.failure for f in findings.values()), [f.failure for f in findings.values()]
    assert not (run.dir / "stages" / "label.json").exists() and run.status()["label"] == "started"
    agg = json.loads((run.dir / "aggregate.json").read_text())  # the agent's own summary of what happened
    assert len(agg["failures"]) == 3 and agg["n_labelled"] == 0
    with pytest.raises(StageNotAvailable, match="needs stage 'label' done"):
        run.stage("aggregate")
    with pytest.raises(LabelIncomplete, match="3 of 3"):  # still down: judged again, still failed
        run.stage("label")
