"""Aggregation: the exact test's level, the correction, intervals that hold their estimates, set rules."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import fisher_exact

from latentdiff.agent import stats
from latentdiff.agent.aggregate import LatentPoint, compare

CATS = ["safety", "multilingual", "instruction_following", "self_reference", "hallucination", "other"]


def _pts(cats: list[str], tag: str = "x", scaffold: int = 0) -> list[LatentPoint]:
    return [LatentPoint(key=f"j:{tag}{i}", category=c, scaffold=i < scaffold) for i, c in enumerate(cats)]


def test_permutation_p_is_the_exact_permutation_distribution() -> None:
    """The p-value equals a brute-force permutation test on set membership (small sets, all splits)."""
    from itertools import combinations

    labels = [1] * 4 + [0] * 6  # 4 of 10 latents in the category
    n_a = 5
    obs = sum(labels[:n_a])
    probs: dict[int, int] = {}
    for idx in combinations(range(10), n_a):
        k = sum(labels[i] for i in idx)
        probs[k] = probs.get(k, 0) + 1
    total = sum(probs.values())
    p_obs = probs[obs] / total
    brute = sum(v for k, v in probs.items() if v / total <= p_obs * (1 + 1e-7)) / total
    assert stats.permutation_p(obs, n_a, 4 - obs, 5) == pytest.approx(brute)
    assert stats.permutation_p(3, 20, 0, 30) == pytest.approx(fisher_exact([[3, 17], [0, 30]]).pvalue)


def test_holm_and_bh() -> None:
    p = [0.01, 0.04, 0.03, 0.2]
    assert stats.adjust(p, "holm") == pytest.approx([0.04, 0.09, 0.09, 0.2])
    assert stats.adjust(p, "bh") == pytest.approx([0.04, 0.04 * 4 / 3, 0.04 * 4 / 3, 0.2])


@pytest.mark.parametrize("ka,na,kb,nb", [(4, 45, 0, 44), (0, 12, 5, 30), (7, 20, 7, 20), (1, 10, 9, 10),
                                         (30, 40, 2, 90), (0, 15, 0, 15), (15, 15, 3, 15)])
def test_intervals_contain_their_estimates(ka: int, na: int, kb: int, nb: int) -> None:
    d, (lo, hi) = stats.share_diff(ka, na, kb, nb)
    assert lo <= d <= hi and -1 <= lo and hi <= 1
    est, (llo, lhi) = stats.log_ratio(ka, na, kb, nb)
    pct, (plo, phi) = stats.paper_pct(ka, na, kb, nb, (llo, lhi))
    if ka and kb:
        assert est == pytest.approx(math.log((ka / na) / (kb / nb)))
        assert (llo is None or llo <= est) and (lhi is None or est <= lhi)
        assert plo <= pct and (phi is None or pct <= phi)
    elif ka:  # only in A: unbounded above, finite positive-side lower bound
        assert est is None and lhi is None and pct is None and llo is not None
    elif kb:  # only in B: the paper's form is -100%, lower bound unbounded
        assert est is None and llo is None and pct == -100.0
    else:
        assert est is None and pct is None


def test_no_magnitude_from_a_pseudo_count() -> None:
    """4 vs 0 latents: no finite ratio is invented; the difference is the raw share difference."""
    comp = compare("a", _pts(["safety"] * 4 + ["other"] * 41), "b", _pts(["other"] * 44, "y"), CATS, "t")
    row = comp.row("safety")
    assert row.shift_pct is None and row.ci95_shift_pct[1] is None
    assert row.diff_pp == pytest.approx(100 * 4 / 45)
    assert not row.significant  # 4 vs 0 of 45/44 is not evidence enough after Holm over 6 categories
    assert row.p_value == pytest.approx(fisher_exact([[4, 41], [0, 44]]).pvalue)


def test_family_wise_level_on_simulated_null_sets() -> None:
    """Both sets drawn from one category distribution (small, unequal sizes): the rate of comparisons with
    any significant category stays at or below alpha (within binomial error)."""
    rng = np.random.default_rng(0)
    shares = np.array([0.1, 0.08, 0.05, 0.12, 0.1, 0.55])
    n_sims, hits = 400, 0
    for i in range(n_sims):
        na, nb = int(rng.integers(10, 60)), int(rng.integers(10, 120))
        ca = rng.choice(6, size=na, p=shares)
        cb = rng.choice(6, size=nb, p=shares)
        comp = compare("a", _pts([CATS[c] for c in ca]), "b", _pts([CATS[c] for c in cb], "y"), CATS, "t")
        hits += any(r.significant for r in comp.categories)
    rate = hits / n_sims
    assert rate <= 0.05 + 2 * math.sqrt(0.05 * 0.95 / n_sims), rate


def test_power_on_a_real_difference() -> None:
    """A real difference of this size is found (so the level test above is not passed by a test that never fires)."""
    a = _pts(["safety"] * 15 + ["other"] * 25)
    b = _pts(["safety"] * 1 + ["other"] * 39, "y")
    row = compare("a", a, "b", b, CATS, "t").row("safety")
    assert row.significant and row.direction == "+" and row.ci95[0] > 0


def test_too_few_latents_are_not_compared() -> None:
    comp = compare("a", _pts(["safety"] * 9), "b", _pts(["other"] * 50, "y"), CATS, "t", min_set=10)
    assert comp.status == "too_few" and comp.note == "too few latents to compare (9)"
    assert not any(r.significant for r in comp.categories) and all(r.p_value is None for r in comp.categories)


def test_scaffold_latents_are_counted_apart() -> None:
    a = _pts(["instruction_following"] * 3 + ["other"] * 20, scaffold=3)
    comp = compare("a", a, "b", _pts(["other"] * 20, "y"), CATS, "t")
    assert comp.n_a == 20 and comp.n_scaffold_a == 3 and comp.row("instruction_following").n_a == 0
    kept = compare("a", a, "b", _pts(["other"] * 20, "y"), CATS, "t", exclude_scaffold=False)
    assert kept.n_a == 23 and kept.row("instruction_following").n_a == 3


def _finding(latent: int, pair: str, side: str, category: str, cc: str = "joint"):
    from latentdiff.records import Finding, LatentLabel, LatentRef

    label = LatentLabel(name="n", description="d", category=category, confidence=0.5)
    return Finding(ref=LatentRef(crosscoder=cc, latent=latent), pair=pair, side=side, delta_norm=0.8,
                   label=label, doc_ids=[latent])


def _cfg(**over):
    from latentdiff.config import build_config

    return build_config({"models": [{"name": "base", "path": "x", "role": "base"},
                                    {"name": "a", "path": "y", "role": "finetune"},
                                    {"name": "b", "path": "z", "role": "finetune"}],
                         "headline": ["a", "b"], "design": "joint"} | over)


def test_headline_reports_both_set_definitions() -> None:
    from latentdiff.agent.summary import build_aggregate

    shared = [_finding(i, p, "finetuned", "self_reference") for i in range(10) for p in ("a", "b")]
    only_a = [_finding(100 + i, "a", "finetuned", "safety") for i in range(12)]
    only_b = [_finding(200 + i, "b", "finetuned", "hallucination") for i in range(12)]
    agg = build_aggregate(_cfg(), shared + only_a + only_b, CATS)
    assert (agg.headline.sets, agg.headline.n_a, agg.headline.n_b) == ("exclusive", 12, 12)
    assert "10 specific to both left out" in agg.headline.description
    assert (agg.headline_alt.sets, agg.headline_alt.n_a, agg.headline_alt.n_b) == ("overlapping", 22, 22)
    paper = build_aggregate(_cfg(headline_exclusive=False), shared + only_a + only_b, CATS)
    assert (paper.headline.sets, paper.headline_alt.sets) == ("overlapping", "exclusive")


def test_fine_tunes_are_compared_with_the_reference_sample() -> None:
    from latentdiff.agent.summary import build_aggregate

    fs = [_finding(i, "a", "finetuned", "safety") for i in range(12)]
    fs += [_finding(20 + i, p, "shared", "other") for i in range(30) for p in ("a", "b")]
    fs += [_finding(60 + i, "a", "base", "other") for i in range(4)]
    agg = build_aggregate(_cfg(headline=None), fs, CATS)
    a_ref = next(c for c in agg.comparisons if c.a == "a" and c.b == "reference")
    assert a_ref.tested and a_ref.n_b == 30 and a_ref.row("safety").significant
    base_ref = next(c for c in agg.comparisons if c.a == "base" and c.pair == "a")
    assert base_ref.status == "too_few" and base_ref.note == "too few latents to compare (4)"


def test_control_contrast_is_exercised_when_the_control_has_specific_latents() -> None:
    from latentdiff.agent.summary import build_aggregate
    from latentdiff.config import build_config

    fs = [_finding(i, "a", "finetuned", "safety") for i in range(15)]
    fs += [_finding(100 + i, "a", "finetuned", "other") for i in range(5)]
    fs += [_finding(100 + i, "ctl", "finetuned", "other") for i in range(5)]  # specific to both: left out of a's
    fs += [_finding(200 + i, "ctl", "finetuned", "other") for i in range(15)]
    cfg = build_config({"models": [{"name": "base", "path": "x", "role": "base"},
                                   {"name": "a", "path": "y", "role": "finetune"},
                                   {"name": "ctl", "path": "z", "role": "control"}]})
    (ctl,) = build_aggregate(cfg, fs, CATS).control
    assert (ctl.a, ctl.b, ctl.kind, ctl.n_a, ctl.n_b) == ("a", "ctl", "control", 15, 20)
    assert ctl.row("safety").significant and ctl.row("safety").direction == "+"


def test_replicates_report_sign_agreement_and_pooled_effect() -> None:
    from latentdiff.agent.summary import build_aggregate

    fs = []
    for cc, n_safety in (("joint", 12), ("joint-seed1", 10), ("joint-seed2", 1)):
        fs += [_finding(i, "a", "finetuned", "safety", cc) for i in range(n_safety)]
        fs += [_finding(50 + i, "a", "finetuned", "other", cc) for i in range(12 - n_safety + 5)]
        fs += [_finding(100 + i, "b", "finetuned", "other", cc) for i in range(15)]
    agg = build_aggregate(_cfg(), fs, CATS)
    assert agg.n_replicates == 3
    assert agg.headline.n_a == 17  # the primary crosscoder's sets only
    row = next(r for r in agg.replicates if r.comparison.startswith("a vs b (exclusive") and r.category == "safety")
    assert row.crosscoders == ["primary", "seed1", "seed2"]
    assert row.sign_agreement == 1.0 and row.pooled_direction == "+"
    assert row.n_significant_same_sign == 2  # the third seed's 1 of 17 is not significant
    assert row.pooled_diff_pp == pytest.approx(sum(row.diff_pp) / 3)


def test_an_empty_set_has_the_widest_interval() -> None:
    comp = compare("a", [], "b", _pts(["other"] * 20, "y"), CATS, "t")
    assert comp.status == "too_few" and all(r.ci95 == (-100.0, 100.0) for r in comp.categories)


def test_pairwise_crosscoders_of_one_replicate_are_compared_together() -> None:
    """A pairwise design has one crosscoder per fine-tune: they form one replicate, not several."""
    from latentdiff.agent.summary import build_aggregate

    fs = [_finding(i, "a", "finetuned", "safety", "a") for i in range(12)]
    fs += [_finding(i, "b", "finetuned", "other", "b") for i in range(12)]
    fs += [_finding(i, "a", "finetuned", "safety" if i < 6 else "other", "a-seed1") for i in range(12)]
    fs += [_finding(i, "b", "finetuned", "safety", "b-seed1") for i in range(12)]  # seed 1: -50 pp
    agg = build_aggregate(_cfg(design="pairwise"), fs, CATS)
    assert agg.n_replicates == 2 and (agg.headline.n_a, agg.headline.n_b) == (12, 12)
    assert agg.headline.row("safety").direction == "+"
    row = next(r for r in agg.replicates if r.category == "safety" and r.comparison.startswith("a vs b"))
    assert row.crosscoders == ["primary", "seed1"] and row.directions == ["+", "-"]
    assert row.pooled_diff_pp == pytest.approx(25.0) and row.sign_agreement == 0.5
