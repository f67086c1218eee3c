"""The label stage: the LangGraph agent labels every model-specific latent (workers and merge)."""

from __future__ import annotations

import json
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

from latentdiff.config import RunConfig
from latentdiff.errors import LabelIncomplete, StageNotAvailable
from latentdiff.io import atomic_write_json
from latentdiff.results import LabelResult
from latentdiff.rundir import RunDir
from latentdiff.stages.base import (
    RunPath,
    begin,
    crosscoder_plan,
    is_done,
    mark_done,
    metrics_logger,
    stage_hash,
    validate,
)
from latentdiff.stages.index import open_store
from latentdiff.stages.sample import reference_latents

log = logging.getLogger(__name__)
T = TypeVar("T")


def label_plan(cfg: RunConfig, table: list[Any]) -> dict[str, list[Any]]:
    """The latents the agent labels, key -> their LatentStats rows: every model-specific latent (base or
    fine-tune side of some pair) and the reference sample of each crosscoder."""
    reference = {f"{cc}:{j}" for cc in crosscoder_plan(cfg) for j in reference_latents(cfg, table, cc)}
    stats: dict[str, list[Any]] = {}
    for row in table:
        key = f"{row.crosscoder}:{row.latent}"
        if row.side in ("finetuned", "base") or key in reference:
            stats.setdefault(key, []).append(row)
    return stats


def _agent_context(cfg: RunConfig, rd: RunDir, store: Any, judge: Any = None) -> Any:
    from latentdiff.agent.graph import new_budget
    from latentdiff.agent.judges.registry import make_judge
    from latentdiff.agent.judges.taxonomy import load_taxonomy
    from latentdiff.agent.state import AgentContext
    from latentdiff.core.examples import read_scaffold
    from latentdiff.core.select import read_table

    stats = label_plan(cfg, read_table(rd.latents))
    taxonomy = load_taxonomy(cfg.judge.taxonomy)
    judge = judge or make_judge(cfg.judge.spec, cfg.judge, cache_dir=rd.judge_cache, vectors=rd.vectors)
    return AgentContext(cfg=cfg, run_dir=rd, judge=judge, store=store, stats=stats, taxonomy=taxonomy,
                        budget=new_budget(cfg.agent.max_judge_calls, rd), scaffold=read_scaffold(rd.examples_dir))


async def _closing(work: Coroutine[Any, Any, T], judge: Any, owned: bool) -> T:
    """Await `work`, then close the judge (on its own event loop) when this stage made it."""
    try:
        return await work
    finally:
        if owned:
            await judge.aclose()


def label_worker(cfg: RunConfig, run_dir: RunPath, index: int, count: int, judge: Any = None) -> None:
    """One labelling worker of `count` (see `run_label`); needs the index stage done here."""
    rd = RunDir.of(run_dir)
    if is_done(cfg, rd, "label"):
        log.info("stage label: up to date, nothing for a worker to do")
        return
    validate(cfg, ["label"])
    with rd.lock():
        if not is_done(cfg, rd, "index"):
            # Another machine may have indexed into the shared store: then this one needs only `sample`.
            if not is_done(cfg, rd, "sample"):
                raise StageNotAvailable("a labelling worker needs stage 'sample' done with these settings first")
            with open_store(cfg, rd) as store:  # counts only examples of this run's crosscoder weights
                indexed = cfg.store.url is not None and store.examples.count() > 0 and store.count_examples() > 0
            if not indexed:
                raise StageNotAvailable("a labelling worker needs the examples indexed: run `latentdiff index "
                                        "CONFIG` here, or once on any machine against the shared store (store.url)")
        run_label(cfg, begin(cfg, rd, "label"), judge=judge, worker=(index, count))


def run_label(cfg: RunConfig, run_dir: RunPath, show: bool = True, judge: Any = None,
              worker: tuple[int, int] | None = None) -> None:
    """The LangGraph agent labels every model-specific latent (resumable via agent.sqlite).

    `worker=(i, n)` labels only worker i's share of the latents (for n workers on one or several
    machines, sharing a Chroma server through store.url) and does not finish the stage; the run
    without `worker` then collects every finding from the store, labels whatever is still missing,
    aggregates and marks the stage done.

    Latents whose judging failed (judge down, errors, junk answers) leave the stage not done:
    `LabelIncomplete` says how many, and running the stage again judges exactly those latents."""
    import asyncio

    from latentdiff.agent.graph import import_store_findings, label_share, run_agent, worker_tag
    from latentdiff.agent.state import read_findings

    rd = RunDir.of(run_dir)
    h = stage_hash(cfg, "label")
    thread = f"label-{h}"
    part = ("label",) if worker is None else ("label", worker_tag(*worker))
    with open_store(cfg, rd) as store, metrics_logger(cfg, rd, *part) as tracker:
        owned = judge is None  # a judge made here is closed here (its HTTP clients, caches); a caller's is not
        ctx = _agent_context(cfg, rd, store, judge)
        ctx.tracker = tracker  # label/ scalars after each wave (agent/nodes.py, assess)
        if worker is not None:
            index, count = worker
            try:
                mine = asyncio.run(_closing(label_share(ctx, thread, index, count), ctx.judge, owned))
            finally:
                ctx.close()
            atomic_write_json(rd.worker_marker(worker_tag(index, count)), {"hash": h, "judge_calls": ctx.budget.used})
            _raise_if_judging_failed(mine, f"worker {index}/{count}", "run it again (or the merge run, "
                                     "`label` without --worker) to judge them again")
            log.info("worker %d/%d done (%d judge calls); run `label` without --worker to merge",
                     index, count, ctx.budget.used)
            return
        store.prune(examples=False)  # findings of other label settings or crosscoder weights (served by nothing)
        # only findings of workers that labelled under these settings (the store may still hold
        # findings of an earlier label run with other settings, e.g. another judge or agent config)
        workers = [json.loads(m.read_text()) for m in rd.worker_markers()]
        imported = import_store_findings(ctx) if any(w.get("hash") == h for w in workers) else 0
        if imported:
            log.info("collected the findings of %d latents labelled by other workers", imported)
        try:
            state = asyncio.run(_closing(run_agent(ctx, thread_id=thread), ctx.judge, owned))
        finally:
            ctx.close()
    recorded = read_findings(rd)
    _raise_if_judging_failed(recorded, "stage label", "run the same command again to judge them again")
    findings = {f.ref.key: f for f in recorded}
    failed = sum(f.label is None for f in findings.values())
    log.info("labelled %d latents, %d failed", len(findings) - failed, failed)
    mark_done(cfg, rd, "label", {"latents": len(findings), "failed": failed,
                                 "judge_calls": ctx.budget.used, "skipped": state.get("skipped", []),
                                 "stop_reason": state.get("stop_reason")})


def _raise_if_judging_failed(findings: list[Any], who: str, how: str) -> None:
    """LabelIncomplete (one line) when some latents' judging failed: the stage is then not marked done
    and a rerun judges exactly those latents again (latents labelled OK are never judged again)."""
    from latentdiff.agent.state import needs_retry

    failed = {f.ref.key: f.failure for f in findings if needs_retry(f)}
    if not failed:
        return
    n_keys = len({f.ref.key for f in findings})
    first = " ".join(str(next(iter(failed.values()))).split())
    first = first if len(first) <= 200 else first[:197] + "..."
    raise LabelIncomplete(f"{who}: judging failed for {len(failed)} of {n_keys} latents ({first}); "
                          f"not done: {how} (latents labelled OK are kept)")


def read_label(cfg: RunConfig, rd: RunDir, info: dict[str, Any]) -> LabelResult:
    """The agent's counts (records: `Run.findings`)."""
    return LabelResult(latents=info["latents"], failed=info["failed"], judge_calls=info["judge_calls"],
                       skipped=info.get("skipped", []))
