"""Nodes of the labelling agent. Each is a plain async function returning a partial state."""

from __future__ import annotations

import json
import logging
from typing import Any, Literal

from langgraph.runtime import Runtime
from langgraph.types import Send

from latentdiff.agent.state import AgentContext, AgentState, LatentTask, parse_key
from latentdiff.io import atomic_write_json
from latentdiff.records import Finding, LatentLabel

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- parent graph


def effect_size(rows: list[Any]) -> float:
    """How strongly a latent is model-specific: Delta-norm extremity plus Latent Scaling."""
    best = 0.0
    for r in rows:
        nu = min(r.nu_eps, r.nu_r) if r.side == "finetuned" else min(r.nu_eps_base, r.nu_r_base)
        best = max(best, abs(r.delta_norm - 0.5) * 2 + (1 - min(max(nu, 0.0), 1.0)))
    return best


async def load_candidates(state: AgentState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    """Order the model-specific latents by effect size; apply the max_latents budget."""
    if state.get("candidates"):
        return {}  # resumed run: keep the original plan
    ctx = runtime.context
    keys = sorted(ctx.stats, key=lambda k: (-effect_size(ctx.stats[k]), k))
    limit = ctx.cfg.agent.max_latents
    chosen, skipped = (keys[:limit], keys[limit:]) if limit else (keys, [])
    if ctx.worker is not None:  # the global plan, then this worker's share of it
        index, count = ctx.worker
        chosen = [k for k in chosen if worker_of(k, count) == index]
        log.info("agent: worker %d/%d takes %d latents", index, count, len(chosen))
    log.info("agent: %d candidate latents (%d over budget)", len(chosen), len(skipped))
    return {"candidates": chosen, "skipped": skipped}


def worker_of(key: str, count: int) -> int:
    """Which of `count` labelling workers owns a latent (stable across processes and machines)."""
    import hashlib

    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % count


def fan_out(state: AgentState, runtime: Runtime[AgentContext]) -> list[Send] | Literal["aggregate"]:
    """One Send per unfinished latent (finished ones have recorded findings)."""
    todo = [k for k in state.get("candidates", []) if not runtime.context.is_finished(k)]
    return [Send("label_latent", {"key": k}) for k in todo] or "aggregate"


async def aggregate(state: AgentState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    """Aggregate every recorded finding into aggregate.json."""
    from latentdiff.agent.summary import write_aggregate

    ctx = runtime.context
    if ctx.worker is not None:  # a worker labels its share; the merge run aggregates everything
        return {"aggregate": ""}
    path = write_aggregate(ctx.cfg, ctx.run_dir, ctx.taxonomy, skipped=state.get("skipped", []))
    return {"aggregate": str(path)}


# --------------------------------------------------------------------------- per-latent subgraph


async def fetch(task: LatentTask, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    """Pick which stored examples explain the latent and which test the label (ids only)."""
    ctx = runtime.context
    examples = ctx.examples(task["key"])
    top = [e for e in examples if e.kind == "top"]
    quant = sorted((e for e in examples if e.kind == "quantile"), key=lambda e: (e.quantile or 0, e.id))
    neg = [e for e in examples if e.kind == "negative"]
    if not top and not quant:
        return {"failure": "no activating examples in the store", "attempts": 0}
    explain = top[::2] + quant[::2]
    test = top[1::2] + quant[1::2]
    return {
        "explain_ids": [e.id for e in explain],
        "test_ids": [e.id for e in test],
        "negative_ids": [e.id for e in neg],
        "attempts": 0,
        "failure": None,
    }


def _texts(ctx: AgentContext, key: str, ids: list[str]) -> list[Any]:
    by_id = {e.id: e for e in ctx.examples(key)}
    return [by_id[i].to_example_text() for i in ids if i in by_id]


async def judge(task: LatentTask, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    """Ask the judge to name and categorise the latent (validated LatentLabel)."""
    from latentdiff.agent.judges.base import JudgeError, LabelRequest

    ctx = runtime.context
    saved = ctx.label_path(task["key"])
    if saved.is_file():  # judged before a kill: reuse, never judge twice
        done = json.loads(saved.read_text())
        return {"label": done["label"], "attempts": done["attempts"]}
    if not await ctx.budget.take(1):
        return {"failure": "judge-call budget exhausted"}
    explain = _texts(ctx, task["key"], task["explain_ids"])
    negatives = _texts(ctx, task["key"], task["negative_ids"])
    top = [e for e in explain if e.kind == "top"]
    quantile = [e for e in explain if e.kind == "quantile"]
    request = LabelRequest(latent=task["key"], top=top or quantile, quantile=quantile if top else [],
                           negative=negatives[: len(negatives) // 2], taxonomy=ctx.taxonomy)
    try:
        label = await ctx.judge.label(request)
    except JudgeError as err:
        log.warning("latent %s: judge failed: %s", task["key"], err)
        return {"failure": f"judge: {err}", "attempts": task.get("attempts", 0) + 1}
    result = {"label": label.model_dump(), "attempts": task.get("attempts", 0) + 1}
    atomic_write_json(saved, result)
    return result


async def verify(task: LatentTask, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    """Detection scoring: can the judge tell held-out activating from non-activating examples?"""
    from latentdiff.agent.judges.base import JudgeError
    from latentdiff.agent.judges.verify import detection_score

    ctx = runtime.context
    label = LatentLabel(**task["label"])
    activating = _texts(ctx, task["key"], task["test_ids"])
    negatives = _texts(ctx, task["key"], task["negative_ids"])
    negatives = negatives[len(negatives) // 2 :]
    if not ctx.cfg.agent.verify or not activating or not negatives:
        return {"verification": None}
    n_calls = -(-(len(activating) + len(negatives)) // 5)
    if not await ctx.budget.take(n_calls):
        return {"verification": None}
    try:
        score = await detection_score(ctx.judge, label, activating, negatives, seed=ctx.cfg.seed)
    except JudgeError as err:
        log.warning("latent %s: verification failed: %s", task["key"], err)
        return {"verification": None}
    return {"verification": score, "attempts": task.get("attempts", 0) + n_calls}


async def record(task: LatentTask, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    """Write the latent's findings (one per pair it is specific for) to the table and the store."""
    ctx = runtime.context
    key = task["key"]
    ref = parse_key(key)
    label = LatentLabel(**task["label"]) if task.get("label") else None
    doc_ids = sorted({e.doc_id for e in ctx.examples(key) if e.kind != "negative" and e.doc_id is not None})
    findings = [
        Finding(ref=ref, pair=r.pair, side=r.side, delta_norm=r.delta_norm, nu_eps=r.nu_eps, nu_r=r.nu_r,
                freq=r.freq, label=label, verification=task.get("verification"),
                attempts=task.get("attempts", 0), failure=task.get("failure"), doc_ids=doc_ids)
        for r in ctx.stats[key]
    ]
    ctx.write_findings(key, findings)
    ctx.store.upsert_findings(findings)
    return {"done": [key]}


def after_fetch(task: LatentTask) -> Literal["judge", "record"]:
    """Skip the judge when there is nothing to show it."""
    return "record" if task.get("failure") else "judge"


def after_judge(task: LatentTask) -> Literal["verify", "record"]:
    """Verify only a label that exists."""
    return "record" if task.get("failure") or not task.get("label") else "verify"


__all__ = ["aggregate", "after_fetch", "after_judge", "fan_out", "fetch", "judge",
           "load_candidates", "record", "verify", "worker_of"]
