"""Refinement of doubtful labels: which evidence each round shows, and when to ask again.

A latent's activating examples are split in two folds: A (even positions) and B (odd positions) of
its top examples, and the same for its quantile examples (sorted by bucket, so each fold has one
example per bucket). Round r shows the judge the fold pair `VIEWS[r]` and tests the label (delphi
detection) on the complementary folds, so every label is scored on examples it was not made from:

    round 0: top A + quantile A      -> test top B + quantile B      (+ random negatives, halves)
    round 1: top A + quantile B      -> test top B + quantile A      (+ hard negatives, model contrast)
    round 2: top B + quantile A      -> test top A + quantile B
    round 3: top B + quantile B      -> test top A + quantile A

Hard negatives: the latent's non-activating windows (kind 'negative': windows where it never fires,
the only contexts whose activation we know to be 0) ranked by meaning against its top examples with
a Chroma query; ranks 0, 2, 4... are shown to the judge as "does not fire here", ranks 1, 3, 5... are
the detection negatives, so both sides are equally hard (the test is harder than round 0's random
halves, which biases a refined score down, never up).

Model contrast: a joint crosscoder has one activation f per token shared by every model, so "the
same context's activation in the other model" cannot honestly be a second activation. What is
per-model is how much each model's reconstruction uses the latent, f x ||d_m||, and Latent Scaling
nu (how much of the direction the other model's own activations hold). `contrast_text` states those
numbers per pair, and the peak f of the shown examples with each model's factor.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from latentdiff.agent.judges.prompting import label_messages, unmark

log = logging.getLogger(__name__)

VIEWS: list[tuple[str, str]] = [("A", "A"), ("A", "B"), ("B", "A"), ("B", "B")]
N_QUERIES = 3  # top examples used as hard-negative queries


def _fold(items: list[Any], fold: str) -> list[Any]:
    return items[0::2] if fold == "A" else items[1::2]


def _other(fold: str) -> str:
    return "B" if fold == "A" else "A"


def split_views(examples: list[Any], round_: int) -> tuple[list[str], list[str], str]:
    """(explain ids, test ids, view name) of round `round_` (see the module docstring)."""
    top = [e for e in examples if e.kind == "top"]
    quant = sorted((e for e in examples if e.kind == "quantile"), key=lambda e: (e.quantile or 0, e.id))
    t, q = VIEWS[round_ % len(VIEWS)]
    explain = _fold(top, t) + _fold(quant, q)
    test = _fold(top, _other(t)) + _fold(quant, _other(q))
    return [e.id for e in explain], [e.id for e in test], f"top {t} + quantile {q}"


def hard_negatives(store: Any, key: str, examples: list[Any]) -> tuple[list[str], list[str]]:
    """(shown, test) negative ids: the latent's negatives ranked by Chroma distance to its top examples."""
    crosscoder, latent = key.rsplit(":", 1)
    negatives = [e.id for e in examples if e.kind == "negative"]
    queries = [unmark(e.text) for e in examples if e.kind == "top"][:N_QUERIES]
    best = {i: float("inf") for i in negatives}
    where = {"crosscoder": crosscoder, "latent": int(latent), "kind": "negative"}
    for q in queries:
        for hit in store.search_examples(q, n=max(len(negatives), 1), where=where):
            if hit.example.id in best:
                best[hit.example.id] = min(best[hit.example.id], hit.distance)
    ranked = sorted(negatives, key=lambda i: (best[i], i))
    return ranked[0::2], ranked[1::2]


def contrast_text(rows: list[Any], shown: list[Any]) -> str:
    """Per-pair decoder norms, Delta-norm, Latent Scaling and contributions; peak f of the shown examples."""
    lines = []
    for r in rows:
        owner = r.pair if r.side == "finetuned" else "base"
        nu_e, nu_r = (r.nu_eps, r.nu_r) if r.side == "finetuned" else (r.nu_eps_base, r.nu_r_base)
        other = "base" if r.side == "finetuned" else r.pair
        lines.append(
            f"- base vs {r.pair}: specific to {owner}. Decoder norm ||d_base|| {r.norm_base:.2f}, ||d_{r.pair}|| "
            f"{r.norm_ft:.2f} (Delta-norm {r.delta_norm:.2f}; 1 = only {r.pair} uses it). Mean contribution "
            f"f x ||d|| per token: base {r.contrib_base:.4f}, {r.pair} {r.contrib_ft:.4f}. Latent Scaling: "
            f"{other}'s own activations hold nu_eps {nu_e:.2f}, nu_r {nu_r:.2f} of the direction."
        )
    if rows and shown:
        r = rows[0]
        peaks = ", ".join(f"{e.max_act:.2f}" for e in shown[:10])
        lines.append(
            f"- peak f of the top examples shown above, in order: {peaks}. The same tokens write "
            f"f x {r.norm_base:.2f} into base and f x {r.norm_ft:.2f} into {r.pair}."
        )
    return "\n".join(lines)


def prompt_hash(request: Any) -> str:
    """sha256 prefix of the rendered label prompt: a fingerprint of exactly what the judge was shown."""
    messages = label_messages(request.top, request.quantile, request.negative, request.taxonomy, request.contrast,
                              request.hard_negatives)
    return hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest()[:16]


def best_attempt(history: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The attempt to keep: the highest verification; the earliest on ties; unscored ones last."""
    scored = [a for a in history if a.get("label")]
    if not scored:
        return None
    return max(scored, key=lambda a: (a["verification"] if a.get("verification") is not None else -1.0,
                                      -a["round"]))


def needs_refinement(cfg: Any, history: list[dict[str, Any]]) -> bool:
    """Ask again while the best label verifies below refine_below (or its confidence is below refine_confidence)
    and rounds are left."""
    agent = cfg.agent
    best = best_attempt(history)
    if agent.refine_below is None or best is None or not history or history[-1].get("stop"):
        return False
    if history[-1]["round"] >= min(agent.refine_rounds, len(VIEWS) - 1):
        return False
    score = best.get("verification")
    weak = score is not None and score < agent.refine_below
    unsure = best["label"]["confidence"] < agent.refine_confidence
    return weak or unsure
