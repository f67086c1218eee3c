"""Aggregation: shift arithmetic, bootstrap CIs, document-level resampling, weighting."""

from __future__ import annotations

import numpy as np
import pytest

from latentdiff.agent.aggregate import ALPHA, LatentPoint, compare

CATS = ["safety", "multilingual", "self_reference", "other"]


def _points(cats: list[str], docs_per: int = 2, start: int = 0) -> list[LatentPoint]:
    return [LatentPoint(key=f"x:{i}", category=c, freq=0.01, doc_ids=list(range(start + i * docs_per,
                                                                                start + (i + 1) * docs_per)))
            for i, c in enumerate(cats)]


def test_shift_arithmetic_matches_formula() -> None:
    a = _points(["safety"] * 6 + ["other"] * 4)
    b = _points(["safety"] * 2 + ["other"] * 8, start=100)
    cmp = compare("A", a, "B", b, CATS, "test", n_boot=200)
    row = next(r for r in cmp.categories if r.name == "safety")
    sa = (6 + ALPHA) / (10 + ALPHA * 4)
    sb = (2 + ALPHA) / (10 + ALPHA * 4)
    assert row.shift_pct == pytest.approx(100 * (sa / sb - 1))
    assert (row.n_a, row.n_b) == (6, 2)
    assert row.ci95[0] <= row.shift_pct <= row.ci95[1]


def test_a_category_absent_from_both_sets_is_never_significant() -> None:
    """0 vs 0 latents: the shift is the pseudo-count over unequal set sizes, repeated by every resample."""
    a = [LatentPoint(key=f"a:{i}", category="safety") for i in range(12)]  # no documents: fixed set sizes
    b = [LatentPoint(key=f"b:{i}", category=c) for i, c in enumerate(["safety"] * 4 + ["other"] * 4)]
    row = next(r for r in compare("A", a, "B", b, CATS, "test", n_boot=200).categories if r.name == "multilingual")
    assert (row.n_a, row.n_b) == (0, 0)
    assert row.shift_pct == pytest.approx(100 * ((8 + ALPHA * 4) / (12 + ALPHA * 4) - 1))  # -29%: not 0
    assert row.ci95[1] < 0  # the CI excludes 0 ...
    assert not row.significant  # ... but there is no evidence


def test_planted_difference_is_significant_and_null_is_not() -> None:
    a = _points(["safety"] * 30 + ["other"] * 10)
    b = _points(["self_reference"] * 30 + ["other"] * 10, start=1000)
    cmp = compare("A", a, "B", b, CATS, "planted", n_boot=500)
    by = {r.name: r for r in cmp.categories}
    assert by["safety"].significant and by["safety"].ci95[0] > 0
    assert by["self_reference"].significant and by["self_reference"].ci95[1] < 0
    rng = np.random.default_rng(0)
    same = list(rng.choice(CATS, size=80))
    null = compare("A", _points(same[:40]), "B", _points(same[40:], start=500), CATS, "null", n_boot=500)
    assert sum(r.significant for r in null.categories) <= 1


def test_document_bootstrap_is_wider_when_latents_share_documents() -> None:
    # every A-latent's examples come from the same two documents: resampling documents moves them together
    a = [LatentPoint(key=f"a:{i}", category="safety" if i < 10 else "other", doc_ids=[0, 1] if i < 10 else [2 + i])
         for i in range(20)]
    b = _points(["safety"] * 5 + ["other"] * 15, start=100)
    cmp = compare("A", a, "B", b, CATS, "clustered", n_boot=800, seed=1)
    row = next(r for r in cmp.categories if r.name == "safety")
    width = row.ci95[1] - row.ci95[0]
    width_latents = row.ci95_latents[1] - row.ci95_latents[0]
    assert width > width_latents


def test_weighted_variant_uses_frequency() -> None:
    a = [LatentPoint(key="a:0", category="safety", freq=0.9), LatentPoint(key="a:1", category="other", freq=0.01)]
    b = [LatentPoint(key="b:0", category="safety", freq=0.01), LatentPoint(key="b:1", category="other", freq=0.9)]
    cmp = compare("A", a, "B", b, CATS, "w", n_boot=50)
    row = next(r for r in cmp.categories if r.name == "safety")
    assert row.shift_pct == pytest.approx(0.0)
    assert row.shift_pct_weighted > 50


def test_headline_exclusive_sets_drop_latents_specific_to_both() -> None:
    from latentdiff.agent.summary import build_aggregate
    from latentdiff.config import build_config
    from latentdiff.records import Finding, LatentLabel, LatentRef

    def finding(latent: int, pair: str, category: str) -> Finding:
        label = LatentLabel(name="n", description="d", category=category, confidence=0.5)
        return Finding(ref=LatentRef(crosscoder="joint", latent=latent), pair=pair, side="finetuned",
                       delta_norm=0.8, label=label, doc_ids=[latent])

    shared = [finding(i, p, "self_reference") for i in range(10) for p in ("a", "b")]  # both fine-tunes
    only_a = [finding(100 + i, "a", "safety") for i in range(5)]
    only_b = [finding(200 + i, "b", "hallucination") for i in range(5)]
    cfg = build_config({"models": [{"name": "base", "path": "x", "role": "base"},
                                   {"name": "a", "path": "y", "role": "finetune"},
                                   {"name": "b", "path": "z", "role": "finetune"}],
                        "headline": ["a", "b"], "design": "joint", "report": {"bootstrap": 50}})
    agg = build_aggregate(cfg, shared + only_a + only_b, CATS + ["hallucination"])
    assert (agg.headline.n_a, agg.headline.n_b) == (5, 5)
    assert "10 latents specific to both were left out" in agg.headline.description
    paper = build_aggregate(cfg.model_copy(update={"headline_exclusive": False}), shared + only_a + only_b,
                            CATS + ["hallucination"])
    assert (paper.headline.n_a, paper.headline.n_b) == (15, 15)


def test_net_of_control_subtracts_the_control_shift() -> None:
    from latentdiff.agent.summary import build_aggregate
    from latentdiff.config import build_config
    from latentdiff.records import Finding, LatentLabel, LatentRef

    def finding(latent: int, pair: str, side: str, category: str) -> Finding:
        label = LatentLabel(name="n", description="d", category=category, confidence=0.5)
        return Finding(ref=LatentRef(crosscoder="joint", latent=latent), pair=pair, side=side, delta_norm=0.8,
                       label=label, doc_ids=[latent])

    fs = [finding(i, "a", "finetuned", "safety") for i in range(8)]
    fs += [finding(10 + i, "a", "finetuned", "other") for i in range(4)]
    fs += [finding(10 + i, "ctl", "finetuned", "other") for i in range(4)]  # generic drift, also in ctl
    fs += [finding(20 + i, "ctl", "finetuned", "safety") for i in range(2)]
    fs += [finding(30 + i, p, "base", "other") for i in range(6) for p in ("a", "ctl")]
    cfg = build_config({"models": [{"name": "base", "path": "x", "role": "base"},
                                   {"name": "a", "path": "y", "role": "finetune"},
                                   {"name": "ctl", "path": "z", "role": "control"}],
                        "report": {"bootstrap": 100}})
    agg = build_aggregate(cfg, fs, CATS)
    (net,) = agg.net_of_control
    assert net.a == "a" and net.control == "ctl"
    ctl = next(c for c in agg.comparisons if c.a == "ctl")
    safety = next(r for r in net.categories if r.name == "safety")
    ctl_safety = next(r for r in ctl.categories if r.name == "safety")
    assert safety.control_shift_pct == pytest.approx(ctl_safety.shift_pct)
    assert safety.shift_pct == pytest.approx(safety.plain_shift_pct - ctl_safety.shift_pct)
    # the 4 latents shared with the control were left out of the fine-tune's set: safety share 8/8
    assert safety.plain_shift_pct == pytest.approx(100 * ((8 + 0.5) / (8 + 2)) / (0.5 / (6 + 2)) - 100)
    assert safety.ci95[0] <= safety.shift_pct <= safety.ci95[1]
