"""Verification of a label by delphi detection scoring (DetectionScorer).

The held-out activating examples and the negatives are stripped to their plain text (no marks,
no activations, no kind: nothing that gives the answer away), shuffled with `seed`, and sent in
batches of `BATCH` to `judge.detect`; the score is the balanced accuracy (TPR + TNR) / 2.
"""

from __future__ import annotations

import asyncio
import random

from latentdiff.agent.judges.base import Judge, JudgeError
from latentdiff.agent.judges.prompting import unmark
from latentdiff.records import ExampleText, LatentLabel

BATCH = 5  # delphi's num_examples_per_scorer_prompt


def blind(example: ExampleText) -> ExampleText:
    """A copy that carries only the unmarked text."""
    plain = unmark(example.plain or example.text)
    return ExampleText(text=plain, plain=plain)


def balanced_accuracy(truth: list[bool], predicted: list[bool]) -> float:
    """(TPR + TNR) / 2; with one class absent, the rate of the class present."""
    if len(truth) != len(predicted) or not truth:
        raise ValueError(f"{len(truth)=} must equal {len(predicted)=} and be > 0")
    pos = [p for t, p in zip(truth, predicted, strict=True) if t]
    neg = [not p for t, p in zip(truth, predicted, strict=True) if not t]
    rates = [sum(xs) / len(xs) for xs in (pos, neg) if xs]
    return sum(rates) / len(rates)


async def detection_score(
    judge: Judge,
    label: LatentLabel,
    activating: list[ExampleText],
    negatives: list[ExampleText],
    seed: int = 0,
) -> float:
    """Balanced detection accuracy of `label` on held-out examples (JudgeError propagates)."""
    items = [(blind(e), True) for e in activating] + [(blind(e), False) for e in negatives]
    if not items:
        raise ValueError("detection_score needs at least one activating or negative example")
    random.Random(seed).shuffle(items)
    batches = [items[i : i + BATCH] for i in range(0, len(items), BATCH)]
    answers = await asyncio.gather(*(judge.detect(label, [e for e, _ in b]) for b in batches))
    predicted: list[bool] = []
    for batch, ans in zip(batches, answers, strict=True):
        if len(ans) != len(batch):
            msg = f"judge {judge.spec} gave {len(ans)} answers for {len(batch)} examples"
            raise JudgeError(msg, "invalid")
        predicted.extend(ans)
    return balanced_accuracy([t for _, t in items], predicted)
