"""Fault injection (issue 15): the label stage of a tiny run against a real local HTTP judge that
misbehaves (tests/judge_server.py): junk bodies, completions without choices, prose or schema-failing
answers, cut-off answers (truncated body, finish_reason=length, a hang-up mid-body), 500s, answers that
come too late (slow, stalled, trickled), dropped connections, a server that goes down and comes back.

What must hold under every fault: labels complete after retries or after a plain rerun; no latent is
lost; no prompt is sent again once it was answered validly; a latent whose judging failed is recorded
with its reason, and the stage is not done (LabelIncomplete, exit code 3) while any latent failed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from latentdiff import errors, stages
from latentdiff.agent.state import read_findings
from latentdiff.config import dump_config
from latentdiff.run import Run
from tests.conftest import small_run_config
from tests.judge_server import JudgeServer, always, first, nth

N_LATENTS = 4


@pytest.fixture(scope="module")
def indexed(core_run: Run, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tiny core run with its examples indexed (the judge plays no part up to here)."""
    dest = tmp_path_factory.mktemp("faults") / "run"
    shutil.copytree(core_run.dir, dest)
    run = Run(small_run_config(dest))
    run.show_progress = False
    for spec in stages.STAGES:  # the ones the core run has done are up to date
        run.stage(getattr(spec, "name", spec))
        if getattr(spec, "name", spec) == "index":
            return dest
    raise AssertionError("no index stage")


def _run(indexed: Path, dest: Path, server: JudgeServer, **judge: Any) -> Run:
    """A copy of the indexed run whose judge is `server` (short timeout, fast retries)."""
    shutil.copytree(indexed, dest)
    settings = {"spec": server.spec, "timeout_s": 1.0, "retries": 1, "max_concurrency": 4} | judge
    run = Run(small_run_config(dest, judge=settings, agent={"max_latents": N_LATENTS, "concurrency": N_LATENTS}))
    run.show_progress = False
    return run


def _label_done(run: Run) -> bool:
    return run.status()["label"] == "done"


def assert_complete(run: Run, server: JudgeServer) -> None:
    """Every planned latent labelled and verified, each label prompt answered validly exactly once,
    nothing asked again after a valid answer, and the stage done with no failures."""
    findings = read_findings(run.dir)
    by_key = {f.ref.key: f for f in findings}
    assert len(by_key) == N_LATENTS, sorted(by_key)
    missing = {k: f.failure for k, f in by_key.items() if f.label is None or f.verification is None}
    assert not missing, missing
    labelled = {f.label.name.removeprefix("latent-") for f in findings if f.label is not None}
    asked = server.per_latent("latent_label")
    assert labelled == set(asked), (labelled, asked)  # no latent lost, none labelled from nowhere
    for latent, actions in asked.items():
        assert actions.count("valid") == 1 and actions[-1] == "valid", (latent, actions)
    assert not server.asked_again_after_success(), server.asked_again_after_success()
    assert _label_done(run) and run.result("label").failed == 0


# --------------------------------------------------------------------------- the server itself


def test_the_judge_server_speaks_openai_and_obeys_its_control_endpoint() -> None:
    import httpx
    import openai

    with JudgeServer() as server:
        client = openai.OpenAI(base_url=server.url, api_key="x", max_retries=0, timeout=5)
        assert [m.id for m in client.models.list()] == [server.model]
        httpx.post(f"http://127.0.0.1:{server.port}/control", json={"fault": "500", "first": 1}, timeout=5)
        fmt = {"type": "json_schema", "json_schema": {"name": "detection", "schema": {
            "properties": {"answers": {"minItems": 3}}}}}

        def ask() -> Any:
            return client.chat.completions.create(
                model=server.model, messages=[{"role": "user", "content": "Explanation: latent-0123abcd"}],
                response_format=fmt)  # type: ignore[arg-type]

        with pytest.raises(openai.InternalServerError):
            ask()
        assert json.loads(ask().choices[0].message.content or "") == {"answers": [0, 1, 0]}
        assert server.per_latent("detection") == {"0123abcd": ["500", "valid"]}
        httpx.post(f"http://127.0.0.1:{server.port}/control", json={"down_s": 0.5}, timeout=5)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # down (refused) ...
            try:
                httpx.get(f"{server.url}/models", timeout=1)
            except (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError):  # refused, or reset while closing
                break
            time.sleep(0.05)
        else:
            pytest.fail("the server did not go down")
        time.sleep(1.0)  # ... and back on the same port
        assert httpx.get(f"{server.url}/models", timeout=5).status_code == 200


# --------------------------------------------------------------------------- transient faults: retried


@pytest.mark.parametrize("fault", ["junk", "envelope", "empty", "prose", "schema", "500", "truncated", "length",
                                   "hangup", "drop", "slow", "stall", "trickle"])
def test_a_fault_on_every_first_request_is_retried(indexed: Path, tmp_path: Path, fault: str) -> None:
    with JudgeServer(first(fault, 1), slow_s=3.0) as server:
        run = _run(indexed, tmp_path / "run", server, cache=False)
        run.stage("label")
    assert_complete(run, server)
    faulted = server.requests(action=fault)
    assert {s.kind for s in faulted} == {"latent_label", "detection"}  # both calls met the fault
    assert len(faulted) == len({s.prompt for s in server.requests()})  # once per prompt, then valid


def test_junk_every_third_request_does_not_abort_the_stage(indexed: Path, tmp_path: Path) -> None:
    with JudgeServer(nth("junk", 3)) as server:
        run = _run(indexed, tmp_path / "run", server, retries=3)
        run.stage("label")
    assert server.count(action="junk") >= 2
    assert_complete(run, server)


def test_the_judge_going_down_and_coming_back_within_the_retries(indexed: Path, tmp_path: Path) -> None:
    # the first request takes the server down for 1.5 s: the retries (0.5 + 1 + 2 s apart) outlast it
    with JudgeServer(lambda seen: "down" if seen.i == 0 else "valid", down_s=1.5) as server:
        run = _run(indexed, tmp_path / "run", server, retries=4)
        run.stage("label")
    assert server.count(action="down") == 1
    assert_complete(run, server)


# --------------------------------------------------------------------------- persistent faults: a rerun


@pytest.mark.parametrize("fault", ["junk", "schema", "500", "length"])
def test_persistent_faults_are_recorded_per_latent_and_a_rerun_finishes(indexed: Path, tmp_path: Path,
                                                                        fault: str) -> None:
    reasons = {"junk": "not JSON", "schema": "not in taxonomy", "500": "HTTP 500", "length": "cut off"}
    # the label prompts of two latents (the first two the server sees) always fail; the rest are fine
    doomed: list[str] = []

    def policy(seen: Any) -> str:
        if seen.kind == "latent_label" and (seen.latent in doomed or len(doomed) < 2):
            if seen.latent not in doomed:
                doomed.append(seen.latent)
            return fault
        return "valid"

    with JudgeServer(policy) as server:
        run = _run(indexed, tmp_path / "run", server)
        with pytest.raises(errors.LabelIncomplete) as info:
            run.stage("label")
        assert info.value.exit_code == 3 and "judging failed for 2 of 4 latents" in str(info.value)
        assert reasons[fault] in str(info.value)
        failed = {f.ref.key: f.failure for f in read_findings(run.dir) if f.label is None}
        assert len(failed) == 2, failed
        assert all(r.startswith("judge: ") and reasons[fault] in r for r in failed.values()), failed
        assert not _label_done(run)
        assert server.per_latent("latent_label")[doomed[0]] == [fault, fault]  # retries=1: two attempts
        server.set_policy(always("valid"))
        run.stage("label")  # a plain rerun judges the two failed latents
    assert_complete(run, server)
    assert all(server.per_latent("latent_label")[d] == [fault, fault, "valid"] for d in doomed)


def test_verification_failures_are_recorded_and_retried_without_relabelling(indexed: Path, tmp_path: Path) -> None:
    with JudgeServer(lambda seen: "500" if seen.kind == "detection" else "valid") as server:
        run = _run(indexed, tmp_path / "run", server)
        with pytest.raises(errors.LabelIncomplete) as info:
            run.stage("label")
        assert "verification" in str(info.value) and "HTTP 500" in str(info.value)
        failed = {f.ref.key: f.failure for f in read_findings(run.dir) if f.verification is None}
        assert len(failed) == N_LATENTS and all("verification" in (r or "") for r in failed.values()), failed
        assert not _label_done(run)
        labels_asked = server.count("latent_label")
        server.set_policy(always("valid"))
        run.stage("label")  # labels are kept: only the detection calls are made again
    assert server.count("latent_label") == labels_asked == N_LATENTS
    assert_complete(run, server)


def test_judge_down_cli_exits_3_and_a_plain_rerun_finishes(indexed: Path, tmp_path: Path) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "latentdiff.cli", *args], capture_output=True, text=True,
                              timeout=300)

    server = JudgeServer()
    try:
        run = _run(indexed, tmp_path / "run", server)
        config = tmp_path / "run.yaml"
        dump_config(run.cfg, config)
        server.down()  # the judge is down for the whole first run
        proc = cli("label", str(config))
        assert proc.returncode == errors.LabelIncomplete.exit_code == 3, proc.stderr[-3000:]
        assert "Traceback" not in proc.stderr
        lines = [ln for ln in proc.stderr.splitlines() if "error:" in ln]
        assert len(lines) == 1 and "connection refused" in lines[0], proc.stderr[-3000:]
        failed = [f for f in read_findings(run.dir) if f.label is None]
        assert len({f.ref.key for f in failed}) == N_LATENTS
        assert all("unreachable" in (f.failure or "") for f in failed)
        assert not _label_done(run) and server.count() == 0
        server.up()
        proc = cli("label", str(config))
        assert proc.returncode == 0, proc.stderr[-3000:]
    finally:
        server.close()
    assert_complete(run, server)


def test_adaptive_waves_keep_failed_latents_in_the_budget(indexed: Path, tmp_path: Path) -> None:
    # adaptive waves under max_latents: a failed latent keeps its place in the budget (a rerun judges it),
    # it is not replaced by another latent that would take the run past max_latents after the rerun
    doomed: list[str] = []

    def policy(seen: Any) -> str:
        if seen.kind == "latent_label" and (seen.latent in doomed or len(doomed) < 2):
            if seen.latent not in doomed:
                doomed.append(seen.latent)
            return "500"
        return "valid"

    with JudgeServer(policy) as server:
        shutil.copytree(indexed, tmp_path / "run")
        judge = {"spec": server.spec, "timeout_s": 1.0, "retries": 1}
        agent = {"max_latents": N_LATENTS, "concurrency": N_LATENTS, "adaptive": True, "wave_size": 2}
        run = Run(small_run_config(tmp_path / "run", judge=judge, agent=agent))
        run.show_progress = False
        with pytest.raises(errors.LabelIncomplete):
            run.stage("label")
        assert len({f.ref.key for f in read_findings(run.dir)}) == N_LATENTS
        server.set_policy(always("valid"))
        run.stage("label")
    assert_complete(run, server)


def test_a_failed_verification_in_a_refinement_round_keeps_the_first_label(indexed: Path, tmp_path: Path) -> None:
    # refinement is best effort: when the refined label cannot be verified, the latent keeps its verified
    # round-0 label, the failed round is recorded as an attempt with its reason, and the stage is done
    refined: set[str] = set()

    def policy(seen: Any) -> str:
        if seen.kind == "latent_label" and "<model_contrast>" in seen.text:
            refined.add(seen.latent)
        return "500" if seen.kind == "detection" and seen.latent in refined else "valid"

    with JudgeServer(policy) as server:
        shutil.copytree(indexed, tmp_path / "run")
        agent = {"max_latents": N_LATENTS, "concurrency": N_LATENTS, "refine_below": 1.0, "refine_rounds": 1}
        run = Run(small_run_config(tmp_path / "run", judge={"spec": server.spec, "timeout_s": 1.0, "retries": 1},
                                   agent=agent))
        run.show_progress = False
        run.stage("label")
    assert refined and _label_done(run) and run.result("label").failed == 0
    for f in read_findings(run.dir):
        assert f.label is not None and f.verification is not None and f.failure is None
        if f.label_attempts[-1].round == 1:
            assert f.label.name != f.label_attempts[-1].label.name  # the verified first label is kept
            assert "verification failed" in (f.label_attempts[-1].failure or "")
    assert not server.asked_again_after_success()


@pytest.mark.parametrize("cache", [True, False])
def test_a_rerun_does_not_ask_again_for_detection_batches_answered_before(indexed: Path, tmp_path: Path,
                                                                          cache: bool) -> None:
    # one detection batch of each latent fails, the others are answered: the rerun asks only the failed ones
    failing: dict[str, str] = {}

    def policy(seen: Any) -> str:
        if seen.kind == "detection":
            failing.setdefault(seen.latent, seen.prompt)
            return "500" if failing[seen.latent] == seen.prompt else "valid"
        return "valid"

    with JudgeServer(policy) as server:
        run = _run(indexed, tmp_path / "run", server, cache=cache)
        with pytest.raises(errors.LabelIncomplete):
            run.stage("label")
        assert server.count("detection", "valid") >= 1  # some latents have more than one batch
        server.set_policy(always("valid"))
        run.stage("label")
    assert_complete(run, server)
