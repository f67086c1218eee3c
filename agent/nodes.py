"""Nodes of the labelling agent. Each is a plain async function returning a partial state."""

from __future__ import annotations

import json
import logging
from typing import Any, Literal

from langgraph.runtime import Runtime
from langgraph.types import Send

from latentdiff.agent.state import JUDGE_FAILURE, AgentContext, AgentState, LatentTask, parse_key
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
    """Order the model-specific latents by effect size; apply the max_latents budget (not adaptive)."""
    if state.get("candidates"):
        return {}  # resumed run: keep the original plan
    ctx = runtime.context
    keys = sorted(ctx.stats, key=lambda k: (-effect_size(ctx.stats[k]), k))
    limit = ctx.cfg.agent.max_latents
    adaptive = ctx.cfg.agent.adaptive and ctx.worker is None
    chosen, skipped = (keys[:limit], keys[limit:]) if limit and not adaptive else (keys, [])
    if ctx.worker is not None:  # the global plan, then this worker's share of it
        index, count = ctx.worker
        chosen = [k for k in chosen if worker_of(k, count) == index]
        log.info("agent: worker %d/%d takes %d latents", index, count, len(chosen))
    log.info("agent: %d candidate latents (%d over budget)%s", len(chosen), len(skipped),
             "; adaptive waves" if adaptive else "")
    return {"candidates": chosen, "skipped": skipped, "queue": chosen, "waves": 0,
            "calls_at_start": ctx.budget.used}


def worker_of(key: str, count: int) -> int:
    """Which of `count` labelling workers owns a latent (stable across processes and machines)."""
    import hashlib

    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % count


async def plan_wave(state: AgentState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    """The next wave: everything queued (not adaptive), or the best `wave capacity` latents (adaptive)."""
    from latentdiff.agent.waves import pick_wave, random_order, wave_capacity

    ctx = runtime.context
    retry = [k for k in state.get("retry", []) if not ctx.is_finished(k)]
    if retry:  # a rerun of a finished plan: the latents whose judging failed, in one wave, nothing else
        log.info("agent: retrying %d latents whose judging failed", len(retry))
        return {"wave": retry, "retry": [], "waves": state.get("waves", 0) + 1}
    queue = [k for k in state.get("queue", []) if not ctx.is_finished(k)]
    if not (ctx.cfg.agent.adaptive and ctx.worker is None):
        return {"wave": queue, "queue": [], "waves": state.get("waves", 0) + 1}
    # a latent whose judging failed keeps its place in the budget: a rerun judges it, so labelling another
    # in its place would take the run past max_latents
    n_done = sum(ctx.is_finished(k) or ctx.judging_failed(k) for k in state.get("candidates", []))
    room, why = wave_capacity(ctx.cfg, n_done, ctx.budget.used, state.get("calls_at_start", 0),
                              len(state.get("done", [])))
    if room <= 0:
        return {"wave": [], "stop_reason": f"budget ({why})"}
    if ctx.cfg.agent.adaptive_order == "effect":
        effect = {k: effect_size(ctx.stats[k]) for k in queue}
    else:  # equal effects, seeded random order: a random draw within the sets picked by weight
        effect, queue = dict.fromkeys(queue, 1.0), random_order(queue, ctx.cfg.seed)
    wave = pick_wave(queue, room, effect, ctx.stats, state.get("weights", {}))
    log.info("agent: wave %d: %d latents (%d queued)", state.get("waves", 0) + 1, len(wave), len(queue))
    return {"wave": wave, "queue": [k for k in queue if k not in set(wave)], "waves": state.get("waves", 0) + 1}


def fan_out(state: AgentState, runtime: Runtime[AgentContext]) -> list[Send] | Literal["assess"]:
    """One Send per unfinished latent of the wave (finished ones have recorded findings)."""
    todo = [k for k in state.get("wave", []) if not runtime.context.is_finished(k)]
    runtime.context.expect(todo)
    return [Send("label_latent", {"key": k}) for k in todo] or "assess"


async def assess(state: AgentState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    """After a wave: stop (budget, CI width, nothing left) or weigh the sets for the next wave."""
    from latentdiff.agent.state import read_findings
    from latentdiff.agent.waves import assess as assess_sets

    ctx = runtime.context
    queue = [k for k in state.get("queue", []) if not ctx.is_finished(k)]
    if ctx.tracker is not None and ctx.tracker.enabled and state.get("wave"):  # not after an empty (stop) wave
        ctx.tracker.log(wave_scalars(ctx, state, queue), state.get("waves", 0), "label")
    adaptive = ctx.cfg.agent.adaptive and ctx.worker is None
    if state.get("stop_reason"):
        reason = state["stop_reason"]
    elif not queue:
        reason = "budget (max_latents)" if state.get("skipped") else "all candidates labelled"
    elif not adaptive:
        reason = None
    else:
        found = read_findings(ctx.run_dir)
        a = assess_sets(ctx.cfg, found, [c.name for c in ctx.taxonomy.categories], queue, ctx.stats)
        log.info("agent: after wave %d: widest CIs %s", state.get("waves", 0),
                 {k: round(v) for k, v in a.widths.items()})
        if a.narrow:
            reason = f"ci_width (every shift CI narrower than {ctx.cfg.agent.ci_width:g} points)"
        else:
            return {"queue": queue, "weights": a.weights}
    if reason is None:
        return {"queue": queue}
    log.info("agent: stopping: %s; %d candidates left unlabelled", reason, len(queue))
    return {"queue": [], "stop_reason": reason, "skipped": [*state.get("skipped", []), *queue]}


def wave_scalars(ctx: AgentContext, state: AgentState, queue: list[str]) -> dict[str, float]:
    """Labelling progress after a wave, for the experiment logger (`log` section): latents labelled / failed /
    queued and this wave's size (over the recorded findings), mean detection score, judge calls of the
    run (its budget), and this process's judge counters (tokens, requests, retries, failures, cache hits)."""
    from latentdiff.agent.state import read_findings

    by_key: dict[str, Finding] = {}
    for f in read_findings(ctx.run_dir):
        by_key.setdefault(f.ref.key, f)  # one finding per pair, the same label and score
    labelled = [f for f in by_key.values() if f.label is not None]
    scores = [f.verification for f in labelled if f.verification is not None]
    out: dict[str, float] = {
        "latents_labelled": len(labelled),
        "latents_failed": len(by_key) - len(labelled),
        "latents_queued": len(queue),
        "wave_latents": len(state.get("wave", [])),
        "judge_calls": ctx.budget.used,
    }
    if scores:
        out["verification_mean"] = sum(scores) / len(scores)
    stats = getattr(ctx.judge, "stats", None)
    for name in ("prompt_tokens", "completion_tokens", "calls", "retries", "failures", "cache_hits"):
        if isinstance(getattr(stats, name, None), int):
            out[f"judge_{'requests' if name == 'calls' else name}"] = getattr(stats, name)
    return out


def after_assess(state: AgentState) -> Literal["plan_wave", "aggregate"]:
    """Another wave while the agent has not decided to stop."""
    return "aggregate" if state.get("stop_reason") or not state.get("queue") else "plan_wave"


async def aggregate(state: AgentState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    """Aggregate every recorded finding into aggregate.json."""
    from latentdiff.agent.summary import write_aggregate

    ctx = runtime.context
    if ctx.worker is not None:  # a worker labels its share; the merge run aggregates everything
        return {"aggregate": ""}
    path = write_aggregate(ctx.cfg, ctx.run_dir, ctx.taxonomy, skipped=state.get("skipped", []),
                           stop_reason=state.get("stop_reason"))
    return {"aggregate": str(path)}


# --------------------------------------------------------------------------- per-latent subgraph


async def fetch(task: LatentTask, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    """Pick which stored examples explain the latent and which test the label (ids only): round 0."""
    from latentdiff.agent.refine import split_views

    ctx = runtime.context
    examples = ctx.examples(task["key"])
    if not any(e.kind in ("top", "quantile") for e in examples):
        return {"failure": "no activating examples in the store", "attempts": 0}
    explain, test, view = split_views(examples, 0)
    neg = [e.id for e in examples if e.kind == "negative"]
    return {
        "explain_ids": explain,
        "test_ids": test,
        "negative_ids": neg[: len(neg) // 2],  # shown to the judge as "does not fire here"
        "test_negative_ids": neg[len(neg) // 2 :],  # detection negatives
        "view": f"{view} + random negatives",
        "contrast": False,
        "round": 0,
        "history": [],
        "attempts": 0,
        "failure": None,
    }


def _texts(ctx: AgentContext, key: str, ids: list[str]) -> list[Any]:
    by_id = {e.id: e for e in ctx.examples(key)}
    return [by_id[i].to_example_text() for i in ids if i in by_id]


def _request(ctx: AgentContext, task: LatentTask) -> Any:
    from latentdiff.agent.judges.base import LabelRequest
    from latentdiff.agent.refine import contrast_text

    explain = _texts(ctx, task["key"], task["explain_ids"])
    negatives = _texts(ctx, task["key"], task["negative_ids"])
    top = [e for e in explain if e.kind == "top"]
    quantile = [e for e in explain if e.kind == "quantile"]
    contrast = contrast_text(ctx.stats.get(task["key"], []), top or quantile) if task.get("contrast") else None
    return LabelRequest(latent=task["key"], top=top or quantile, quantile=quantile if top else [],
                        negative=negatives, taxonomy=ctx.taxonomy, contrast=contrast,
                        hard_negatives=bool(task.get("contrast")))


async def judge(task: LatentTask, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    """Ask the judge to name and categorise the latent (validated LatentLabel) on this round's evidence."""
    from latentdiff.agent.judges.base import JudgeError
    from latentdiff.agent.refine import prompt_hash

    ctx = runtime.context
    key, rnd = task["key"], task.get("round", 0)
    history = list(task.get("history", []))
    saved = ctx.label_path(key, rnd)
    if saved.is_file():  # judged before a kill: reuse, never judge twice
        done = json.loads(saved.read_text())
        attempt = done.get("attempt") or {"round": 0, "view": task.get("view", ""), "prompt_hash": "",
                                          "label": done["label"], "calls": 1}
        return {"label": done["label"], "attempts": done["attempts"], "history": [*history, attempt]}
    request = _request(ctx, task)
    attempt = {"round": rnd, "view": task.get("view", ""), "prompt_hash": prompt_hash(request), "label": None,
               "calls": 0}
    if not await ctx.budget.take(1):
        if rnd == 0:
            return {"failure": "judge-call budget exhausted"}
        return {"label": None, "history": [*history, attempt | {"failure": "judge-call budget exhausted",
                                                                   "stop": True}]}
    attempts = task.get("attempts", 0) + 1
    try:
        label = await ctx.judge.label(request)
    except JudgeError as err:
        log.warning("latent %s: judge failed (round %d): %s", key, rnd, err)
        if rnd == 0:
            return {"failure": f"{JUDGE_FAILURE}{err}", "attempts": attempts}
        return {"label": None, "attempts": attempts,
                "history": [*history, attempt | {"calls": 1, "failure": f"{JUDGE_FAILURE}{err}", "stop": True}]}
    attempt |= {"label": label.model_dump(), "calls": 1}
    result = {"label": label.model_dump(), "attempts": attempts}
    atomic_write_json(saved, result | {"attempt": attempt})
    return result | {"history": [*history, attempt]}


async def verify(task: LatentTask, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    """Detection scoring: can the judge tell held-out activating from non-activating examples?"""
    from latentdiff.agent.judges.base import JudgeError
    from latentdiff.agent.judges.verify import detection_batches, detection_score

    ctx = runtime.context
    key, rnd = task["key"], task.get("round", 0)
    history = list(task.get("history", []))
    saved = ctx.label_path(key, rnd)
    done = json.loads(saved.read_text()) if saved.is_file() else {}
    if "verification" in done:  # scored before a kill
        history[-1] = history[-1] | {"verification": done["verification"], "calls": done["attempt"]["calls"]}
        return {"verification": done["verification"], "attempts": done["attempts"], "history": history}
    label = LatentLabel(**task["label"])
    activating = _texts(ctx, key, task["test_ids"])
    negatives = _texts(ctx, key, task["test_negative_ids"])
    if not ctx.cfg.agent.verify or not activating or not negatives:
        return {"verification": None}
    answered: dict[str, list[bool]] = dict(done.get("detections", {}))  # batches answered before a failure
    n_calls = max(len(detection_batches(activating, negatives, ctx.cfg.seed)) - len(answered), 0)
    if not await ctx.budget.take(n_calls):
        history[-1] = history[-1] | {"stop": True}
        return {"verification": None, "history": history}
    attempts = task.get("attempts", 0) + n_calls
    try:
        score = await detection_score(ctx.judge, label, activating, negatives, seed=ctx.cfg.seed, answered=answered)
    except JudgeError as err:
        if done and answered:  # a rerun asks only the batches still unanswered
            atomic_write_json(saved, done | {"detections": answered})
        # like a failed label: round 0 leaves the latent failed (a rerun reuses the saved label and
        # verifies it again); a refinement round ends the refinement, its unscored label kept as an attempt
        log.warning("latent %s: verification failed (round %d): %s", key, rnd, err)
        failure = f"{JUDGE_FAILURE}verification failed: {err}"
        history[-1] = history[-1] | {"calls": history[-1]["calls"] + n_calls, "failure": failure, "stop": True}
        out = {"verification": None, "attempts": attempts, "history": history}
        return out | {"failure": failure} if rnd == 0 else out
    history[-1] = history[-1] | {"verification": score, "calls": history[-1]["calls"] + n_calls}
    if done:
        atomic_write_json(saved, done | {"verification": score, "attempts": attempts, "attempt": history[-1]})
    return {"verification": score, "attempts": attempts, "history": history}


async def refine(task: LatentTask, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    """Gather evidence not shown before for the next round: other folds, hard negatives, model contrast."""
    from latentdiff.agent.refine import hard_negatives, split_views

    ctx = runtime.context
    rnd = task.get("round", 0) + 1
    examples = ctx.examples(task["key"])
    explain, test, view = split_views(examples, rnd)
    shown_neg, test_neg = hard_negatives(ctx.store, task["key"], examples)
    last = task["history"][-1].get("verification")
    log.debug("latent %s: refining (round %d, last score %s)", task["key"], rnd, last)
    return {"round": rnd, "explain_ids": explain, "test_ids": test, "negative_ids": shown_neg,
            "test_negative_ids": test_neg, "contrast": True, "label": None, "verification": None,
            "view": f"{view} + hard negatives + model contrast"}


async def record(task: LatentTask, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    """Write the latent's findings (one per pair), keeping its best-verified label, to the table and the store."""
    from latentdiff.agent.refine import best_attempt
    from latentdiff.records import LabelAttempt

    ctx = runtime.context
    key = task["key"]
    ref = parse_key(key)
    history = task.get("history", [])
    best = best_attempt(history)
    failure = task.get("failure")  # round 0 failed (no examples, judge failure, budget): no label
    label = LatentLabel(**best["label"]) if best and not failure else None
    verification = best.get("verification") if best else None
    tried = [LabelAttempt(**{k: v for k, v in a.items() if k != "stop"}) for a in history]
    doc_ids = sorted({e.doc_id for e in ctx.examples(key) if e.kind != "negative" and e.doc_id is not None})
    findings = [
        Finding(ref=ref, pair=r.pair, side=r.side, delta_norm=r.delta_norm, nu_eps=r.nu_eps, nu_r=r.nu_r,
                freq=r.freq, label=label, verification=verification if label else None,
                attempts=task.get("attempts", 0), failure=None if label else failure, doc_ids=doc_ids,
                label_attempts=tried, scaffold_share=ctx.scaffold.get(key))
        for r in ctx.stats[key]
    ]
    ctx.write_findings(key, findings)
    await ctx.index_findings(findings)
    ctx.recorded()
    return {"done": [key]}


def after_fetch(task: LatentTask) -> Literal["judge", "record"]:
    """Skip the judge when there is nothing to show it."""
    return "record" if task.get("failure") else "judge"


def after_judge(task: LatentTask) -> Literal["verify", "record"]:
    """Verify only a label that exists."""
    return "record" if task.get("failure") or not task.get("label") else "verify"


def after_verify(task: LatentTask, runtime: Runtime[AgentContext]) -> Literal["refine", "record"]:
    """Refine while the best label verifies below agent.refine_below and rounds are left (not after a failure)."""
    from latentdiff.agent.refine import needs_refinement

    if task.get("failure"):
        return "record"
    return "refine" if needs_refinement(runtime.context.cfg, task.get("history", [])) else "record"


__all__ = ["after_assess", "after_fetch", "after_judge", "after_verify", "aggregate", "assess", "fan_out",
           "fetch", "judge", "load_candidates", "plan_wave", "record", "refine", "verify", "wave_scalars", "worker_of"]
