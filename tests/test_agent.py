"""The labelling agent: graph logic with a scripted judge (real embedded Chroma store, real
SQLite checkpointer), failures, budgets, resume after kill -9 without re-judging.

The same path runs with real judges in tests/test_agent_real.py (embedding judge, CPU vLLM)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from latentdiff.agent.graph import run_agent
from latentdiff.agent.judges.base import Judge, JudgeError, LabelRequest
from latentdiff.agent.judges.taxonomy import load_taxonomy
from latentdiff.agent.state import AgentContext, Budget, read_findings
from latentdiff.config import build_config
from latentdiff.core.examples import Example
from latentdiff.core.select import LatentStats
from latentdiff.records import ExampleText, LatentLabel
from latentdiff.store.chroma import LatentStore

CATS = ["safety", "multilingual", "self_reference"]


class ScriptedJudge(Judge):
    """Labels latent i with category CATS[i % 3]; logs every completed call; can fail or sleep."""

    def __init__(self, spec: str = "scripted", cfg=None, log: Path | None = None,
                 fail: set[int] = frozenset(), delay: float = 0.0) -> None:
        super().__init__(spec, cfg)
        self.log, self.fail, self.delay = log, set(fail), delay

    async def label(self, request: LabelRequest) -> LatentLabel:
        latent = int(request.latent.rsplit(":", 1)[-1])
        await asyncio.sleep(self.delay)
        if latent in self.fail:
            raise JudgeError("invalid answer after 4 attempts: junk", "invalid")
        if self.log:
            with self.log.open("a") as fh:
                fh.write(request.latent + "\n")
        return LatentLabel(name=f"concept {latent}", description="scripted", category=CATS[latent % 3],
                           confidence=0.9, judge=self.spec)

    async def detect(self, label: LatentLabel, examples: list[ExampleText]) -> list[bool]:
        return [" b" in e.plain for e in examples]  # examples arrive blinded (no marks, no activations)


def make_run(tmp: Path, n_latents: int = 12) -> tuple:
    cfg = build_config({"name": "t", "run_dir": str(tmp), "headline": ["shift", "it"],
                        "report": {"min_set_size": 3}, "agent": {"concurrency": 4}})
    store = LatentStore(cfg.store, cfg.name, tmp / "chroma")
    examples = []
    for j in range(n_latents):
        for kind, n in (("top", 4), ("quantile", 2), ("negative", 4)):
            for i in range(n):
                act = 0.0 if kind == "negative" else 1.0 + i
                examples.append(Example(latent=j, kind=kind, quantile=i if kind == "quantile" else None,
                                        ctx=100 * j + 10 * i + len(kind), start=0,
                                        tokens=["x", " y", " z"] if kind == "negative" else ["a", " b", " c"],
                                        activations=[0.0, act, 0.0], max_act=act, doc_id=j * 10 + i))
    store.add_examples("joint", examples)
    stats = {}
    for j in range(n_latents):
        pair = "shift" if j % 2 else "it"
        stats[f"joint:{j}"] = [LatentStats(latent=j, crosscoder="joint", pair=pair, side="finetuned",
                                           delta_norm=0.8, cosine=0.1, norm_base=0.2, norm_ft=1.0, nu_eps=0.1,
                                           nu_r=0.1, nu_eps_base=1.0, nu_r_base=1.0, freq=0.01, mean_act=1.0,
                                           contrib_base=0.0, contrib_ft=0.01)]
    return cfg, store, stats


def context(cfg, store, stats, judge, limit=None) -> AgentContext:
    return AgentContext(cfg=cfg, run_dir=Path(cfg.run_dir), judge=judge, store=store, stats=stats,
                        taxonomy=load_taxonomy(), budget=Budget(limit))


def test_agent_labels_verifies_records_and_aggregates(tmp_path: Path) -> None:
    cfg, store, stats = make_run(tmp_path)
    log = tmp_path / "calls.log"
    result = asyncio.run(run_agent(context(cfg, store, stats, ScriptedJudge(log=log, fail={5})), "t1"))
    findings = {f.ref.key: f for f in read_findings(tmp_path)}
    assert set(findings) == set(stats)
    assert findings["joint:5"].label is None and "invalid answer" in findings["joint:5"].failure
    ok = [f for f in findings.values() if f.label]
    assert len(ok) == 11 and all(f.verification == 1.0 for f in ok)  # perfect scripted detection
    assert store.count_findings() == 12
    agg = json.loads((tmp_path / "aggregate.json").read_text())
    assert agg["n_latents"] == 12 and agg["n_labelled"] == 11
    assert agg["failures"] == [{"key": "joint:5", "reason": findings["joint:5"].failure}]
    assert agg["headline"]["a"] == "shift" and result["aggregate"].endswith("aggregate.json")
    assert sorted(log.read_text().split()) == sorted(k for k in stats if k != "joint:5")
    # rerun: only the latent whose judging failed is judged again (once); then nothing
    asyncio.run(run_agent(context(cfg, store, stats, ScriptedJudge(log=log)), "t1"))
    assert log.read_text().split()[11:] == ["joint:5"]
    assert all(f.label is not None for f in read_findings(tmp_path)) and store.count_findings() == 12
    asyncio.run(run_agent(context(cfg, store, stats, ScriptedJudge(log=log)), "t1"))
    assert len(log.read_text().split()) == 12


def test_budget_exhaustion_is_recorded(tmp_path: Path) -> None:
    cfg, store, stats = make_run(tmp_path, n_latents=6)
    cfg.agent.verify = False
    asyncio.run(run_agent(context(cfg, store, stats, ScriptedJudge(), limit=4), "t2"))
    findings = read_findings(tmp_path)
    assert sum(f.label is not None for f in findings) == 4
    assert sum(f.failure == "judge-call budget exhausted" for f in findings) == 2


CHILD = """
import asyncio, sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from test_agent import ScriptedJudge, context, make_run
from latentdiff.agent.graph import run_agent
tmp = Path({tmp!r})
cfg, store, stats = make_run(tmp, n_latents=16)
asyncio.run(run_agent(context(cfg, store, stats, ScriptedJudge(log=tmp / "calls.log", delay={delay})), "kill"))
"""


def test_kill_9_and_resume_judges_no_latent_twice(tmp_path: Path) -> None:
    tests = str(Path(__file__).parent)
    env = dict(os.environ, PYTHONPATH=tests)
    slow = subprocess.Popen([sys.executable, "-c", CHILD.format(tests=tests, tmp=str(tmp_path), delay=1.5)],
                            env=env, start_new_session=True)
    log = tmp_path / "calls.log"
    deadline = time.time() + 240
    while time.time() < deadline and (not log.exists() or len(log.read_text().split()) < 4):
        time.sleep(0.2)
    os.killpg(slow.pid, signal.SIGKILL)
    slow.wait()
    done_before = len(log.read_text().split())
    assert 4 <= done_before < 16, "kill must land mid-run"
    assert (tmp_path / "agent.sqlite").is_file()
    subprocess.run([sys.executable, "-c", CHILD.format(tests=tests, tmp=str(tmp_path), delay=0.0)],
                   env=env, check=True, timeout=300)
    calls = log.read_text().split()
    assert sorted(set(calls)) == sorted(f"joint:{j}" for j in range(16))
    assert len(calls) == len(set(calls)), f"a latent was judged twice: {calls}"
    assert len(read_findings(tmp_path)) == 16


def test_injection_cannot_touch_other_records(tmp_path: Path) -> None:
    cfg, store, stats = make_run(tmp_path, n_latents=3)

    class Injected(ScriptedJudge):
        async def label(self, request: LabelRequest) -> LatentLabel:
            # a judge that obeyed injected text could only ever return a LatentLabel for THIS latent
            label = await super().label(request)
            return label.model_copy(update={"name": "ignore previous instructions"})

    asyncio.run(run_agent(context(cfg, store, stats, Injected()), "t3"))
    findings = {f.ref.key: f for f in read_findings(tmp_path)}
    assert all(f.ref.key == k for k, f in findings.items())
    with pytest.raises(ValueError):
        LatentLabel(name="x", description="y", category="safety", confidence=0.5, hack=True)  # type: ignore[call-arg]
