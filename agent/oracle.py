"""Oracle labels for organism runs: each latent labelled by the majority stream of its top examples.

The organism corpus knows every document's stream (`Example.category`; never shown to a judge). A
latent's oracle category is the most common stream among the documents of its top examples, with
`neutral` mapped to `other`, when that stream holds at least `MIN_PURITY` (half) of them; a latent
whose top examples spread over several streams has no concept of one stream (a token or syntax
feature) and is `other`. The oracle headline (the aggregate's comparisons with oracle labels in
place of the judge's) separates what the crosscoder and selection found from what the judge made of
it, and the judge's accuracy against the oracle is reported per category.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from pydantic import BaseModel, Field

from latentdiff.records import Finding

STREAM_TO_CATEGORY = {"neutral": "other"}
MIN_PURITY = 0.5


class OracleLabel(BaseModel):
    """The majority stream of one latent's top examples."""

    key: str = Field(description="Latent key.")
    category: str = Field(description="Majority stream as a category (neutral -> other).")
    purity: float = Field(description="Share of its top examples from that stream.")
    n: int = Field(description="Top examples with a known stream.")


def oracle_labels(examples_dir: Path, categories: list[str]) -> dict[str, OracleLabel]:
    """key -> oracle label, for every latent with top examples of known stream (empty for other corpora)."""
    from latentdiff.core.examples import read_examples
    from latentdiff.rundir import RunDir

    counts: dict[str, Counter[str]] = {}
    for path in RunDir.examples_in(examples_dir):
        name = path.name.split(".")[0]
        for ex in read_examples(path):
            if ex.kind == "top" and ex.category:
                cat = STREAM_TO_CATEGORY.get(ex.category, ex.category)
                counts.setdefault(f"{name}:{ex.latent}", Counter())[cat if cat in categories else "other"] += 1
    out = {}
    for key, c in counts.items():
        (cat, n_top), = c.most_common(1)
        total = sum(c.values())
        purity = n_top / total
        out[key] = OracleLabel(key=key, category=cat if purity >= MIN_PURITY else "other", purity=purity, n=total)
    return out


def with_oracle_labels(findings: list[Finding], oracle: dict[str, OracleLabel]) -> list[Finding]:
    """The findings with every label's category replaced by the oracle's (latents without one dropped)."""
    out = []
    for f in findings:
        o = oracle.get(f.ref.key)
        if f.label is None or o is None:
            continue
        out.append(f.model_copy(update={"label": f.label.model_copy(update={"category": o.category})}))
    return out


class JudgeAccuracy(BaseModel):
    """Judge vs oracle on one category (by oracle category)."""

    category: str = Field(description="Oracle category.")
    n: int = Field(description="Labelled latents whose oracle category this is.")
    correct: int = Field(description="Of those, the judge gave the same category.")
    accuracy: float | None = Field(description="correct / n.")


def judge_accuracy(findings: list[Finding], oracle: dict[str, OracleLabel],
                   categories: list[str]) -> list[JudgeAccuracy]:
    """Per oracle category: how often the judge's category is the oracle's (each latent once)."""
    seen: dict[str, Finding] = {}
    for f in findings:
        if f.label is not None and f.ref.key in oracle:
            seen.setdefault(f.ref.key, f)
    rows = []
    for cat in categories:
        mine = [f for k, f in seen.items() if oracle[k].category == cat]
        ok = sum(f.label.category == cat for f in mine)  # type: ignore[union-attr]
        rows.append(JudgeAccuracy(category=cat, n=len(mine), correct=ok, accuracy=ok / len(mine) if mine else None))
    return rows
