"""The labelling agent as a LangGraph graph.

    START -> load_candidates -> plan_wave -> (Send per latent of the wave) label_latent -> assess
          -> plan_wave (next wave) | aggregate -> END
    label_latent (subgraph): fetch -> judge -> verify -> [refine -> judge -> verify]* -> record

One wave holds every candidate unless agent.adaptive (agent/waves.py: waves by effect size and by
which sets' shift CIs are widest; stops at the budget or when every CI is narrower than ci_width).
A label verifying below agent.refine_below is refined with evidence not shown before (agent/refine.py)
for up to agent.refine_rounds rounds; the best-verified label is kept and every attempt recorded.

Durable: a SQLite checkpointer in the run directory (`RunDir.agent_db`); a run killed at any point and
restarted continues the same thread, so finished latents are never judged again (their findings
are recorded, and completed branches are restored from the checkpoint). A finished thread run again
judges exactly its latents whose judging failed (`state.needs_retry`: judge down, errors, junk), once.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from langgraph.graph import END, START, StateGraph

from latentdiff.agent import nodes
from latentdiff.agent.state import AgentContext, AgentState, Budget, LatentTask
from latentdiff.records import Finding
from latentdiff.rundir import RunDir

log = logging.getLogger(__name__)


def build_latent_graph() -> Any:
    """fetch -> judge -> verify -> (refine -> judge -> verify)* -> record for one latent."""
    g = StateGraph(LatentTask, context_schema=AgentContext)
    g.add_node("fetch", nodes.fetch)
    g.add_node("judge", nodes.judge)
    g.add_node("verify", nodes.verify)
    g.add_node("refine", nodes.refine)
    g.add_node("record", nodes.record)
    g.add_edge(START, "fetch")
    g.add_conditional_edges("fetch", nodes.after_fetch)
    g.add_conditional_edges("judge", nodes.after_judge)
    g.add_conditional_edges("verify", nodes.after_verify)
    g.add_edge("refine", "judge")
    g.add_edge("record", END)
    return g.compile()


def build_graph(checkpointer: Any = None) -> Any:
    """The whole agent, compiled with an optional checkpointer."""
    g = StateGraph(AgentState, context_schema=AgentContext)
    g.add_node("load_candidates", nodes.load_candidates)
    g.add_node("plan_wave", nodes.plan_wave)
    g.add_node("label_latent", build_latent_graph())
    g.add_node("assess", nodes.assess)
    g.add_node("aggregate", nodes.aggregate)
    g.add_edge(START, "load_candidates")
    g.add_edge("load_candidates", "plan_wave")
    g.add_conditional_edges("plan_wave", nodes.fan_out, ["label_latent", "assess"])
    g.add_edge("label_latent", "assess")
    g.add_conditional_edges("assess", nodes.after_assess)
    g.add_edge("aggregate", END)
    return g.compile(checkpointer=checkpointer)


graph = build_graph()  # for `langgraph.json` / LangGraph Studio


async def run_agent(ctx: AgentContext, thread_id: str, worker: str | None = None) -> dict[str, Any]:
    """Run (or resume) the agent on ctx with a SQLite checkpointer in the run directory (one file
    per labelling worker, tag `worker`, so workers sharing a directory never contend for one database)."""
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    db = ctx.run_dir.agent_db(worker)
    db.parent.mkdir(parents=True, exist_ok=True)
    async with AsyncSqliteSaver.from_conn_string(str(db)) as saver:
        app = build_graph(saver)
        config = {"configurable": {"thread_id": thread_id}, "recursion_limit": 10_000,
                  "max_concurrency": ctx.cfg.agent.concurrency}
        snapshot = await app.aget_state(config)
        resume = bool(snapshot.next)
        start: dict[str, Any] | None = None if resume else {"done": []}
        if resume:
            log.info("agent: resuming thread %s at %s", thread_id, snapshot.next)
        elif snapshot.values.get("aggregate") is not None:  # finished ("" for a worker)
            retry = [k for k in snapshot.values.get("candidates", []) if ctx.judging_failed(k)]
            if not retry:
                log.info("agent: thread %s already finished", thread_id)
                return dict(snapshot.values)
            log.info("agent: thread %s finished with %d latents whose judging failed: judging them again",
                     thread_id, len(retry))
            start = {"done": [], "retry": retry}
        result = await app.ainvoke(start, config, context=ctx)
        return dict(result)


def worker_tag(index: int, count: int) -> str:
    """The name of labelling worker `index` of `count` ('w0of2'): its checkpoint file and marker carry it."""
    return f"w{index}of{count}"


async def label_share(ctx: AgentContext, thread_id: str, index: int, count: int) -> list[Finding]:
    """Label worker `index`'s share of `count` (its own thread and checkpoint file); return its findings."""
    from latentdiff.agent.nodes import worker_of
    from latentdiff.agent.state import read_findings

    ctx.worker = (index, count)
    tag = worker_tag(index, count)
    await run_agent(ctx, thread_id=f"{thread_id}-{tag}", worker=tag)
    return [f for f in read_findings(ctx.run_dir) if worker_of(f.ref.key, count) == index]


def import_store_findings(ctx: AgentContext) -> int:
    """Copy findings that other labelling workers put in the (shared) store into this run's
    findings table: every latent whose findings for all its pairs are there. Returns how many."""
    by_key: dict[str, list[Any]] = {}
    for f in ctx.store.iter_findings():
        by_key.setdefault(f.ref.key, []).append(f)
    n = 0
    for key, found in by_key.items():
        if key in ctx.stats and not ctx.is_finished(key) and len(found) == len(ctx.stats[key]):
            ctx.write_findings(key, sorted(found, key=lambda f: f.pair))
            n += 1
    return n


def new_budget(limit: int | None, run_dir: Path | RunDir) -> Budget:
    """A judge-call budget that counts the calls already spent by recorded findings."""
    from latentdiff.agent.state import read_findings

    per_latent = {f.ref.key: f.attempts for f in read_findings(run_dir)}  # one entry per latent
    return Budget(limit, used=sum(per_latent.values()))
