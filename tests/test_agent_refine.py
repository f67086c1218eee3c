"""Refinement of doubtful labels and the adaptive labelling budget.

Graph logic with a scripted judge (real embedded Chroma store, real SQLite checkpointer), beside the
same refinement path end to end against the real vLLM server (fixture `vllm_server`)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from latentdiff.agent.graph import run_agent
from latentdiff.agent.judges.base import LabelRequest
from latentdiff.agent.state import read_findings
from latentdiff.agent.waves import pick_wave, random_order
from latentdiff.records import ExampleText, LatentLabel
from tests.test_agent import CATS, ScriptedJudge, context, make_run


class RefiningJudge(ScriptedJudge):
    """Round 0 gives a label that detects nothing ('bad'); later rounds give a perfect one ('good'),
    unless `always_bad`. Records every label request."""

    def __init__(self, always_bad: bool = False, **kw) -> None:
        super().__init__(**kw)
        self.always_bad = always_bad
        self.requests: list[LabelRequest] = []

    async def label(self, request: LabelRequest) -> LatentLabel:
        self.requests.append(request)
        latent = int(request.latent.rsplit(":", 1)[-1])
        first = sum(r.latent == request.latent for r in self.requests) == 1
        name = "bad" if first or self.always_bad else "good"
        return LatentLabel(name=f"{name} {latent}", description="scripted", category=CATS[latent % 3],
                           confidence=0.9, judge=self.spec)

    async def detect(self, label: LatentLabel, examples: list[ExampleText]) -> list[bool]:
        if label.name.startswith("bad"):
            return [False] * len(examples)  # balanced accuracy 0.5
        return await super().detect(label, examples)


def test_refinement_keeps_the_better_label_and_records_attempts(tmp_path: Path) -> None:
    cfg, store, stats = make_run(tmp_path, n_latents=4)
    cfg.agent.refine_below, cfg.agent.refine_rounds = 0.7, 2
    judge = RefiningJudge()
    asyncio.run(run_agent(context(cfg, store, stats, judge), "r1"))
    for f in read_findings(tmp_path):
        first, second = f.label_attempts
        assert (first.verification, second.verification) == (0.5, 1.0)  # stops once above refine_below
        assert f.label.name.startswith("good") and f.verification == 1.0 and f.refined
        assert first.prompt_hash != second.prompt_hash and first.view != second.view
        assert f.attempts == first.calls + second.calls
    refine_requests = [r for r in judge.requests if r.contrast]
    assert len(refine_requests) == 4 and all(r.hard_negatives for r in refine_requests)
    assert "Decoder norm" in refine_requests[0].contrast
    assert len([r for r in judge.requests if not r.contrast]) == 4
    # the aggregate reports the refinement per category
    agg = json.loads((tmp_path / "aggregate.json").read_text())
    assert sum(r["n_refined"] for r in agg["refinement"]) == 4
    assert all(r["verification_after"] > r["verification_before"] for r in agg["refinement"])


def test_refinement_terminates_and_keeps_the_first_on_ties(tmp_path: Path) -> None:
    cfg, store, stats = make_run(tmp_path, n_latents=2)
    cfg.agent.refine_below, cfg.agent.refine_rounds = 0.7, 3
    asyncio.run(run_agent(context(cfg, store, stats, RefiningJudge(always_bad=True)), "r2"))
    for f in read_findings(tmp_path):
        assert [a.round for a in f.label_attempts] == [0, 1, 2, 3]
        assert len({a.view for a in f.label_attempts}) == 4  # other evidence every round (same texts here)
        assert f.verification == 0.5 and f.label == f.label_attempts[0].label


def test_refinement_attempts_survive_a_lost_checkpoint(tmp_path: Path) -> None:
    """Attempts are saved on disk when judged and scored: relabelling reuses them, calls no judge."""
    cfg, store, stats = make_run(tmp_path, n_latents=2)
    cfg.agent.refine_below = 0.7
    asyncio.run(run_agent(context(cfg, store, stats, RefiningJudge()), "r3"))
    before = {f.ref.key: f for f in read_findings(tmp_path)}
    for path in (tmp_path / "findings").glob("*.json"):
        path.unlink()
    (tmp_path / "agent.sqlite").unlink()
    (tmp_path / "aggregate.json").unlink()

    class NoCalls(RefiningJudge):
        async def label(self, request: LabelRequest) -> LatentLabel:
            raise AssertionError(f"{request.latent} judged twice")

        async def detect(self, label: LatentLabel, examples: list[ExampleText]) -> list[bool]:
            raise AssertionError("verified twice")

    asyncio.run(run_agent(context(cfg, store, stats, NoCalls()), "r3b"))
    after = {f.ref.key: f for f in read_findings(tmp_path)}
    assert after == before


def _graded(stats: dict) -> None:
    """Give latent j Delta-norm 0.5 + j/40: effect size grows with j."""
    for j, rows in enumerate(sorted(stats, key=lambda k: int(k.split(":")[1]))):
        stats[rows][0] = stats[rows][0].model_copy(update={"delta_norm": 0.5 + j / 40, "nu_eps": 1.0, "nu_r": 1.0})


def test_adaptive_budget_prefers_high_effect_and_stops_at_the_budget(tmp_path: Path) -> None:
    cfg, store, stats = make_run(tmp_path, n_latents=12)
    _graded(stats)
    cfg.agent.adaptive, cfg.agent.max_latents, cfg.agent.wave_size = True, 4, 4
    cfg.agent.adaptive_order = "effect"
    asyncio.run(run_agent(context(cfg, store, stats, ScriptedJudge()), "a1"))
    labelled = sorted(f.ref.latent for f in read_findings(tmp_path))
    assert labelled == [8, 9, 10, 11]
    agg = json.loads((tmp_path / "aggregate.json").read_text())
    assert agg["stop_reason"] == "budget (max_latents)"
    assert sorted(agg["skipped"]) == sorted(f"joint:{j}" for j in range(8))


def test_adaptive_random_order_is_a_seeded_draw_not_the_top_effects(tmp_path: Path) -> None:
    """The default order: the first wave is a seeded random draw of the candidates (effects ignored)."""
    picked = {}
    for seed in (0, 1):
        cfg, store, stats = make_run(tmp_path / str(seed), n_latents=12)
        _graded(stats)
        cfg.agent.adaptive, cfg.agent.max_latents, cfg.agent.wave_size = True, 4, 4
        cfg.seed = seed
        asyncio.run(run_agent(context(cfg, store, stats, ScriptedJudge()), f"rand{seed}"))
        picked[seed] = sorted(f.ref.key for f in read_findings(tmp_path / str(seed)))
        assert picked[seed] == sorted(random_order(sorted(stats), seed)[:4])
    top_effects = sorted(f"joint:{j}" for j in range(8, 12))  # what adaptive_order 'effect' takes
    assert picked[0] != picked[1] and top_effects not in picked.values()


def test_random_waves_draw_every_latent_equally_often() -> None:
    """Within one set, `random_order` + `pick_wave` is a uniform draw, whatever the effect sizes."""
    keys = [f"joint:{j}" for j in range(12)]
    counts = dict.fromkeys(keys, 0)
    for seed in range(600):
        for k in pick_wave(random_order(keys, seed), 4, dict.fromkeys(keys, 1.0), {}, {}):
            counts[k] += 1
    assert all(150 <= c <= 250 for c in counts.values()), counts  # 200 expected, sd ~12


def test_adaptive_call_budget_waves_never_overspend(tmp_path: Path) -> None:
    cfg, store, stats = make_run(tmp_path, n_latents=12)
    cfg.agent.verify, cfg.agent.refine_below = False, None  # one judge call per latent
    cfg.agent.adaptive, cfg.agent.max_judge_calls, cfg.agent.wave_size = True, 5, 2
    ctx = context(cfg, store, stats, ScriptedJudge(), limit=5)
    asyncio.run(run_agent(ctx, "a2"))
    findings = read_findings(tmp_path)
    assert len(findings) == 5 and all(f.label is not None for f in findings)  # no "budget exhausted" failures
    assert ctx.budget.used == 5
    agg = json.loads((tmp_path / "aggregate.json").read_text())
    assert agg["stop_reason"] == "budget (max_judge_calls)" and len(agg["skipped"]) == 7


def test_adaptive_stops_when_every_ci_is_narrow(tmp_path: Path) -> None:
    cfg, store, stats = make_run(tmp_path, n_latents=12)
    cfg.agent.adaptive, cfg.agent.wave_size, cfg.agent.ci_width = True, 4, 1e9
    cfg.agent.ci_min_per_set = 1
    asyncio.run(run_agent(context(cfg, store, stats, ScriptedJudge()), "a3"))
    agg = json.loads((tmp_path / "aggregate.json").read_text())
    assert agg["stop_reason"].startswith("ci_width") and agg["n_latents"] == 4 and len(agg["skipped"]) == 8
    # the default ci_min_per_set (20) is more than these sets hold: the CI rule waits for all of them
    cfg1, store1, stats1 = make_run(tmp_path / "m", n_latents=12)
    cfg1.agent.adaptive, cfg1.agent.wave_size, cfg1.agent.ci_width = True, 4, 1e9
    asyncio.run(run_agent(context(cfg1, store1, stats1, ScriptedJudge()), "a3m"))
    agg1 = json.loads((tmp_path / "m" / "aggregate.json").read_text())
    assert agg1["n_latents"] == 12 and agg1["skipped"] == []
    # and with a width no CI can reach, it labels everything
    cfg2, store2, stats2 = make_run(tmp_path / "b", n_latents=8)
    cfg2.agent.adaptive, cfg2.agent.wave_size, cfg2.agent.ci_width = True, 4, 1e-3
    asyncio.run(run_agent(context(cfg2, store2, stats2, ScriptedJudge()), "a4"))
    agg2 = json.loads((tmp_path / "b" / "aggregate.json").read_text())
    assert agg2["stop_reason"] == "all candidates labelled" and agg2["n_latents"] == 8


@pytest.mark.slow
def test_refinement_end_to_end_on_the_real_judge(vllm_server, tmp_path: Path) -> None:
    from latentdiff.agent.judges.registry import make_judge
    from latentdiff.config import JudgeConfig

    url, model = vllm_server
    cfg, store, stats = make_run(tmp_path, n_latents=3)
    cfg.agent.refine_below, cfg.agent.refine_confidence, cfg.agent.refine_rounds = 0.7, 1.0, 1  # refine once
    spec = f"vllm:{url}@{model}"
    judge = make_judge(spec, JudgeConfig(spec=spec, max_tokens=256, timeout_s=120, retries=2))
    asyncio.run(run_agent(context(cfg, store, stats, judge), "v1"))
    findings = read_findings(tmp_path)
    assert len(findings) == 3
    for f in findings:
        if f.label is None:
            assert f.failure  # the tiny organism may fail its first label: the reason is recorded
            continue
        assert [a.round for a in f.label_attempts] == [0, 1]
        assert f.label_attempts[0].prompt_hash != f.label_attempts[1].prompt_hash
        kept = max((a for a in f.label_attempts if a.label), key=lambda a: (a.verification or -1, -a.round))
        assert f.label == kept.label and f.verification == kept.verification
        assert f.label.judge == spec
    assert any(f.label is not None for f in findings), [f.failure for f in findings]
