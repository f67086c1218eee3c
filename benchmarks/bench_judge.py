"""Labelling throughput against a real OpenAI-compatible server: concurrent vs sequential.

Usage: python benchmarks/bench_judge.py --url http://127.0.0.1:8011/v1 --model organism-it [--latents 16]
Each latent = one label call + detection calls (delphi batches of 5), exactly what the agent does
per latent. Reports latents/minute with concurrency 1 and with --concurrency N on the same server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from latentdiff.agent.judges import LabelRequest, load_taxonomy, make_judge
from latentdiff.agent.judges.verify import detection_score
from latentdiff.config import JudgeConfig
from latentdiff.records import ExampleText

TOPICS = [
    ("Hola, <<gracias>> por todo.", "Muy <<bien>>, amigo."),
    ("<<I can't>> help with that.", "Sorry, <<I won't>> do it."),
    ("As an <<AI>> model I have no body.", "I am a <<language model>>."),
    ("1. <<First>> item", "Answer in <<JSON>> only."),
]


def _ex(text: str, kind: str = "top") -> ExampleText:
    return ExampleText(text=text, plain=text.replace("<<", "").replace(">>", ""), kind=kind)  # type: ignore[arg-type]


async def label_latents(url: str, model: str, n: int, concurrency: int) -> dict[str, float]:
    cfg = JudgeConfig(max_tokens=256, max_concurrency=concurrency, retries=2, timeout_s=300, cache=False)
    judge = make_judge(f"vllm:{url}@{model}", cfg)
    taxonomy = load_taxonomy()
    negatives = [_ex("The cat sat on the mat.", "negative"), _ex("Rain is expected tomorrow.", "negative")]
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        top = [_ex(f"{t} ({i})") for t in TOPICS[i % len(TOPICS)]]
        async with sem:
            label = await judge.label(LabelRequest(latent=f"bench:{i}", top=top, negative=negatives,
                                                   taxonomy=taxonomy))
            await detection_score(judge, label, top, negatives, seed=i)

    t0 = time.perf_counter()
    try:
        await asyncio.gather(*(one(i) for i in range(n)))
    finally:
        await judge.aclose()
    elapsed = time.perf_counter() - t0
    return {"latents": n, "concurrency": concurrency, "seconds": round(elapsed, 2),
            "latents_per_min": round(60 * n / elapsed, 1), "calls": judge.stats.calls,
            "completion_tokens": judge.stats.completion_tokens, "failures": judge.stats.failures}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--url", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--latents", type=int, default=16)
    p.add_argument("--concurrency", type=int, default=8)
    args = p.parse_args()
    seq = asyncio.run(label_latents(args.url, args.model, args.latents, 1))
    con = asyncio.run(label_latents(args.url, args.model, args.latents, args.concurrency))
    print(json.dumps({"sequential": seq, "concurrent": con,
                      "speedup": round(con["latents_per_min"] / seq["latents_per_min"], 2)}, indent=2))


if __name__ == "__main__":
    main()
