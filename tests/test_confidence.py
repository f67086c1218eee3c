"""Label confidence (issue 14): one calibrated number per label, low-confidence labels marked in the
report, every comparison also reported the other way round; report.md keeps label text inert."""

from __future__ import annotations

from latentdiff.agent.confidence import calibrated_confidence, is_low_confidence
from latentdiff.records import Finding, LabelAttempt, LatentLabel, LatentRef

CATS = ["safety", "multilingual", "instruction_following", "self_reference", "hallucination", "other"]


def _label(category: str, confidence: float, judge: str) -> LatentLabel:
    return LatentLabel(name="n", description="d", category=category, confidence=confidence, judge=judge)


def _finding(latent: int, pair: str, category: str, confidence: float, judge: str = "embedding",
             verification: float | None = None, rounds: list[str] | None = None, side: str = "finetuned") -> Finding:
    label = _label(category, confidence, judge)
    attempts = [LabelAttempt(round=i, view="v", prompt_hash="h", label=_label(c, confidence, judge))
                for i, c in enumerate(rounds or [])]
    return Finding(ref=LatentRef(crosscoder="joint", latent=latent), pair=pair, side=side, delta_norm=0.8,
                   label=label, verification=verification, label_attempts=attempts)


def test_embedding_confidence_is_its_margin() -> None:
    assert calibrated_confidence(_finding(1, "a", "safety", 0.3, verification=0.95)) == 0.3


def test_llm_confidence_is_capped_by_detection_and_fold_agreement() -> None:
    sure = _finding(1, "a", "safety", 0.95, judge="vllm:http://x@m", verification=0.6)
    assert abs(calibrated_confidence(sure) - 0.2) < 1e-9  # 2 (0.6 - 0.5): the detection score disagrees
    folds = _finding(2, "a", "safety", 0.9, judge="vllm:http://x@m", verification=1.0,
                     rounds=["safety", "hallucination", "safety", "safety"])
    assert abs(calibrated_confidence(folds) - 0.9 * 0.75) < 1e-9
    unverified = _finding(3, "a", "safety", 0.7, judge="openai:http://x@m")
    assert calibrated_confidence(unverified) == 0.7
    failed = Finding(ref=LatentRef(crosscoder="joint", latent=4), pair="a", side="finetuned", delta_norm=0.9)
    assert calibrated_confidence(failed) is None and not is_low_confidence(failed, 0.5)


def _cfg(**over):  # noqa: ANN202
    from latentdiff.config import build_config

    return build_config({"models": [{"name": "base", "path": "x", "role": "base"},
                                    {"name": "a", "path": "y", "role": "finetune"},
                                    {"name": "b", "path": "z", "role": "finetune"}],
                         "headline": ["a", "b"], "design": "joint"} | over)


def _findings() -> list[Finding]:
    # a: 12 sure safety latents + 8 unsure ones; b: 20 sure hallucination latents + 8 unsure safety ones
    fs = [_finding(i, "a", "safety", 0.9) for i in range(12)]
    fs += [_finding(20 + i, "a", "safety", 0.1) for i in range(8)]
    fs += [_finding(100 + i, "b", "hallucination", 0.9) for i in range(20)]
    fs += [_finding(130 + i, "b", "safety", 0.2) for i in range(8)]
    fs += [_finding(200 + i, p, "other", 0.9, side="shared") for i in range(30) for p in ("a", "b")]
    return fs


def test_aggregate_reports_both_ways() -> None:
    from latentdiff.agent.summary import build_aggregate

    agg = build_aggregate(_cfg(), _findings(), CATS)
    v = agg.confidence
    assert v is not None and v.threshold == 0.5 and v.excluded
    assert len(v.low_confidence) == 16
    assert (agg.headline.n_a, agg.headline.n_b) == (20, 28)  # main: every label
    alt = v.comparisons[0]
    assert (alt.kind, alt.n_a, alt.n_b) == ("headline", 12, 20)  # without the unsure ones
    assert alt.row("safety").n_b == 0 and agg.headline.row("safety").n_b == 8
    other = build_aggregate(_cfg(report={"exclude_low_confidence": True}), _findings(), CATS)
    assert (other.headline.n_a, other.headline.n_b) == (12, 20) and not other.confidence.excluded
    assert (other.confidence.comparisons[0].n_a, other.confidence.comparisons[0].n_b) == (20, 28)


def test_report_marks_low_confidence_and_md_is_inert(tmp_path) -> None:  # noqa: ANN001
    from latentdiff.agent.report.render import render_html, render_markdown
    from latentdiff.agent.summary import build_aggregate
    from tests.test_summary import _report

    rep = _report()
    cards = list(rep.latents)
    cards[0] = cards[0].model_copy(update={"name": "<img src=x onerror=alert(1)> | `x`", "confidence": 0.12,
                                           "low_confidence": True,
                                           "description": "<script>alert(2)</script>"})
    cards[1] = cards[1].model_copy(update={"confidence": 0.93})
    agg = build_aggregate(_cfg(), _findings(), CATS)
    rep = rep.model_copy(update={"latents": cards, "confidence": agg.confidence})
    md = render_markdown(rep, {}, max_cards=5)
    assert "<img" not in md and "<script>" not in md and "&lt;script&gt;" in md
    assert "confidence 0.12 (low)" in md and "confidence 0.93," in md
    assert "## Low-confidence labels" in md and "16 labels have a calibrated confidence below 0.5" in md
    page = render_html(rep, {}, max_cards=5)
    assert "<span class='low-confidence'>confidence 0.12 (low)</span>" in page
    assert "id='low-confidence'" in page and "<img src=x" not in page
