"""Replicate crosscoders: the same cache, other seeds. How far do the comparisons agree across seeds?

`crosscoder.seeds: [s0, s1, ...]` trains one crosscoder per seed (named NAME, NAME-seed<s1>, ...: the
first seed keeps the plain name and is the primary, whose comparisons are the report's). Each is
selected, sampled and labelled (sharing the judge cache). Per comparison and category, a
`ReplicateRow` lists every replicate's effect and test, the sign agreement (share of replicates
whose direction is the pooled direction) and the pooled effect (the mean share difference over
replicates). Replicates share the data, so the pooled effect is not given a test of its own: a
finding that holds in every replicate is robust to the crosscoder's seed, not to the data.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, Field

SUFFIX = re.compile(r"-seed(\d+)$")


def replicate_name(base: str, seed: int, primary_seed: int) -> str:
    """Crosscoder name of a replicate: the primary keeps `base`, others get '-seed<seed>'."""
    return base if seed == primary_seed else f"{base}-seed{seed}"


def replicate_order(name: str) -> tuple[int, str]:
    """Sort key: primary crosscoders (no seed suffix) first, then by seed."""
    m = SUFFIX.search(name)
    return (0, name) if m is None else (1 + int(m.group(1)), name)


def replicate_groups(names: set[str] | list[str]) -> dict[str, set[str]]:
    """Crosscoder names grouped by replicate, primary first: {'': {'it', 'shift'}, 'seed1': {'it-seed1', ...}}.

    A pairwise design has one crosscoder per fine-tune in every replicate; a joint design one."""
    groups: dict[str, set[str]] = {}
    for name in sorted(names, key=replicate_order):
        m = SUFFIX.search(name)
        groups.setdefault("" if m is None else f"seed{m.group(1)}", set()).add(name)
    return groups


class ReplicateRow(BaseModel):
    """One category of one comparison across crosscoder seeds."""

    comparison: str = Field(description="'A vs B (sets)'.")
    category: str = Field(description="Category.")
    crosscoders: list[str] = Field(description="Replicates, primary first ('primary', 'seed1', ...).")
    diff_pp: list[float] = Field(description="Share difference (percentage points) per replicate.")
    significant: list[bool] = Field(description="Significant after correction, per replicate.")
    directions: list[str] = Field(description="'+', '-' or '0' per replicate.")
    tested: list[bool] = Field(description="Per replicate: both sets were large enough to test.")
    pooled_diff_pp: float = Field(description="Mean share difference over replicates.")
    pooled_direction: str = Field(description="Sign of the pooled difference.")
    sign_agreement: float = Field(description="Share of replicates whose direction is the pooled direction.")
    n_significant_same_sign: int = Field(description="Replicates significant in the pooled direction.")


def comparison_id(c: Any) -> str:
    """How a comparison is recognised across replicates."""
    return f"{c.a} vs {c.b} ({c.sets}{', ' + c.pair if c.pair and c.kind != 'control' else ''})"


def replicate_rows(reps: dict[str, dict[str, Any]]) -> list[ReplicateRow]:
    """Rows for every comparison present in every replicate (reps: replicate -> comparisons_for output)."""
    names = list(reps)
    per: dict[str, list[Any]] = {}
    for name in names:
        r = reps[name]
        for c in [r["headline"], r["headline_alt"], *r["comparisons"], *r["control"]]:
            if c is not None:
                per.setdefault(comparison_id(c), []).append(c)
    rows = []
    for cid, comps in per.items():
        if len(comps) != len(names):
            continue
        for k, cat in enumerate(comps[0].categories):
            cells = [c.categories[k] for c in comps]
            diffs = [x.diff_pp for x in cells]
            pooled = sum(diffs) / len(diffs)
            sign = "+" if pooled > 0 else "-" if pooled < 0 else "0"
            rows.append(ReplicateRow(
                comparison=cid, category=cat.name, crosscoders=names, diff_pp=diffs,
                significant=[x.significant for x in cells], directions=[x.direction for x in cells],
                tested=[c.tested for c in comps], pooled_diff_pp=pooled, pooled_direction=sign,
                sign_agreement=sum(x.direction == sign for x in cells) / len(cells),
                n_significant_same_sign=sum(x.significant and x.direction == sign for x in cells)))
    return rows
