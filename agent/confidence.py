"""A label's calibrated confidence, and which labels count as low-confidence.

Judges report confidence in different currencies, so the aggregate and the report read one number:
- the **embedding judge** (and any judge spec starting with `embedding`): its softmax margin p1 - p2
  between the first and second category (agent/judges/embedding_judge.py). On the demo organisms
  (crosscoder seed 0, 294 labelled latents) the labels it gives with margin >= 0.8 match the
  majority stream of their examples 89% of the time, those with margin 0.3-0.5 50%, 0.1-0.3 35%;
  ROC AUC 0.87 / 0.82 / 0.81 at crosscoder seeds 0 / 1 / 2 (docs/benchmarks.md).
- **LLM judges** (vLLM, OpenAI-compatible, transformers): their self-reported number is not
  calibrated, so it is capped by the evidence latentdiff measured itself: the detection score
  (balanced accuracy b in [0.5, 1] maps to 2 (b - 0.5) in [0, 1]) and, when the latent went through
  refinement rounds (other example folds), the share of rounds whose category equals the kept one.
  confidence = min(self-reported, detection) x fold agreement. A label without a detection score
  keeps its self-reported number.

A label is **low-confidence** when that number is below `report.low_confidence` (default 0.5: on
the demo organisms, the margin below which the embedding judge's labels are right about as often as
wrong; for an LLM judge, a detection balanced accuracy below 0.75). The aggregate reports every
comparison both ways (agent/summary.py): with all labels, and with low-confidence labels left out.
"""

from __future__ import annotations

from latentdiff.records import Finding

MARGIN_JUDGES = ("embedding",)


def calibrated_confidence(f: Finding) -> float | None:
    """The finding's label confidence in one currency (None when it has no label)."""
    if f.label is None:
        return None
    stated = float(f.label.confidence)
    judge = (f.label.judge or "").split(":", 1)[0]
    if judge in MARGIN_JUDGES:
        return stated
    conf = stated
    if f.verification is not None:
        conf = min(conf, max(0.0, min(1.0, 2.0 * (f.verification - 0.5))))
    rounds = [a.label.category for a in f.label_attempts if a.label is not None]
    if len(rounds) > 1:
        conf *= sum(c == f.label.category for c in rounds) / len(rounds)
    return conf


def is_low_confidence(f: Finding, threshold: float) -> bool:
    """The label's calibrated confidence is below `threshold` (False for unlabelled findings)."""
    c = calibrated_confidence(f)
    return c is not None and c < threshold
