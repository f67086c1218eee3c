"""Judge fan-out over several endpoints: the pool's choice rules, and a dead endpoint beside the
real CPU vLLM server (requests fail over, the dead one is set aside, every label still arrives)."""

from __future__ import annotations

import asyncio

import pytest

from latentdiff.agent.judges import LabelRequest, load_taxonomy, make_judge
from latentdiff.agent.judges.base import JudgeError
from latentdiff.agent.judges.openai_compat import EndpointPool, OpenAICompatJudge, parse_http_spec
from latentdiff.config import JudgeConfig
from tests.test_judges_vllm import LATENTS, NEGATIVES, _ex


def test_spec_lists_endpoints() -> None:
    assert parse_http_spec("vllm:http://a:1/v1/, http://b:2/v1@m") == ("vllm", "http://a:1/v1,http://b:2/v1", "m")
    with pytest.raises(JudgeError, match="listed twice"):
        parse_http_spec("vllm:http://a:1/v1,http://a:1/v1@m")
    with pytest.raises(JudgeError, match="must start with http"):
        parse_http_spec("vllm:http://a:1/v1,ftp://b@m")


def test_least_loaded_round_robin_and_set_aside() -> None:
    pool = EndpointPool(["a", "b", "c"])
    a, b, c = pool.endpoints
    a.inflight, b.inflight, c.inflight = 2, 0, 1
    assert pool.pick() is b
    b.inflight = 5
    assert pool.pick() is c
    a.inflight = b.inflight = c.inflight = 0
    assert [pool.pick().url for _ in range(3)] == ["c", "a", "b"]  # ties rotate
    pool.failed(a)
    assert all(pool.pick() is not a for _ in range(6))  # set aside while failing
    pool.succeeded(a)
    assert "a" in {pool.pick().url for _ in range(3)}
    rr = EndpointPool(["x", "y"], policy="round_robin")
    rr.endpoints[0].inflight = 9
    assert [rr.pick().url for _ in range(4)] == ["x", "y", "x", "y"]
    for e in pool.endpoints:
        pool.failed(e)
    assert pool.pick() in pool.endpoints  # all set aside: the one back soonest


@pytest.mark.slow
def test_dead_endpoint_beside_real_vllm(vllm_server: tuple[str, str]) -> None:
    url, model = vllm_server
    judge = make_judge(f"vllm:http://127.0.0.1:9/v1,{url}@{model}",
                       JudgeConfig(max_tokens=256, max_concurrency=4, retries=3, timeout_s=120))
    assert isinstance(judge, OpenAICompatJudge)
    taxonomy = load_taxonomy()

    async def go() -> list:
        try:
            return await asyncio.gather(*(
                judge.label(LabelRequest(latent=k, top=[_ex(t) for t in v], negative=NEGATIVES, taxonomy=taxonomy))
                for k, v in LATENTS.items()))
        finally:
            await judge.aclose()

    labels = asyncio.run(go())
    assert len(labels) == len(LATENTS)
    stats = judge.endpoint_stats()
    dead, live = stats["http://127.0.0.1:9/v1"], stats[url]
    assert dead["calls"] == dead["failures"] >= 1 and live["calls"] >= len(LATENTS) and live["failures"] == 0
    assert dead["calls"] < len(LATENTS)  # set aside after failing, not tried for every request
