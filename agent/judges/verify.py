"""Verification of a label by delphi detection scoring (DetectionScorer).

The held-out activating examples and the negatives are stripped to their plain text (no marks,
no activations, no kind: nothing that gives the answer away), shuffled with `seed`, and sent in
batches of `BATCH` to `judge.detect`; the score is the balanced accuracy (TPR + TNR) / 2.
Answered batches can be kept (`answered`), so that a retry after a failed batch asks only the batches
still unanswered.
"""

from __future__ import annotations

import asyncio
import hashlib
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


def batch_key(batch: list[ExampleText]) -> str:
    """Names a detection batch by its texts (stable across runs: same examples, same seed, same order)."""
    return hashlib.sha256("\0".join(e.plain or e.text for e in batch).encode()).hexdigest()[:16]


def detection_batches(
    activating: list[ExampleText], negatives: list[ExampleText], seed: int = 0
) -> list[list[tuple[ExampleText, bool]]]:
    """The blinded examples with their truth, shuffled with `seed`, in batches of `BATCH`."""
    items = [(blind(e), True) for e in activating] + [(blind(e), False) for e in negatives]
    if not items:
        raise ValueError("detection needs at least one activating or negative example")
    random.Random(seed).shuffle(items)
    return [items[i : i + BATCH] for i in range(0, len(items), BATCH)]


async def detection_score(
    judge: Judge,
    label: LatentLabel,
    activating: list[ExampleText],
    negatives: list[ExampleText],
    seed: int = 0,
    answered: dict[str, list[bool]] | None = None,
) -> float:
    """Balanced detection accuracy of `label` on held-out examples.

    `answered` (batch_key -> answers) holds batches answered before: they are not asked again, and every
    batch answered now is added, also when another batch fails. Every batch is tried before the first
    JudgeError is raised, so the caller can save `answered` and a retry asks only the failed batches."""
    batches = detection_batches(activating, negatives, seed)
    answered = {} if answered is None else answered

    async def ask(batch: list[tuple[ExampleText, bool]]) -> list[bool]:
        key = batch_key([e for e, _ in batch])
        if key not in answered:
            ans = await judge.detect(label, [e for e, _ in batch])
            if len(ans) != len(batch):
                raise JudgeError(f"judge {judge.spec} gave {len(ans)} answers for {len(batch)} examples", "invalid")
            answered[key] = ans
        return answered[key]

    results = await asyncio.gather(*(ask(b) for b in batches), return_exceptions=True)
    failed = [r for r in results if isinstance(r, BaseException)]
    if failed:
        raise failed[0]
    predicted = [p for ans in results for p in ans]  # type: ignore[union-attr]
    return balanced_accuracy([t for b in batches for _, t in b], predicted)
