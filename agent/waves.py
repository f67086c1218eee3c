"""Adaptive budget: which latents to label next, and when to stop (agent.adaptive).

The agent labels in waves. After each wave `assess` recomputes the comparisons of the report
(headline, each pair's fine-tune and base-specific sets vs the reference sample) from the findings so
far, and gives every (pair, side) set a weight: the widest category interval (share difference, in
percentage points) among the comparisons it feeds, relative to the widest overall (a set still
empty while candidates for it remain weighs most).

Which latents a wave takes (`agent.adaptive_order`):
- 'random' (default): the sets with the largest weight first and, within them, a seeded random
  order (`random_order`). The first wave is a random draw of all candidates. Each set's labelled
  latents are then a random sample of that set, so its category shares estimate the full set's
  without bias (a latent in several sets counts for each).
- 'effect': the largest `effect size x weight` (`nodes.effect_size`: Delta-norm extremity plus
  Latent Scaling), big effects first: the most model-specific latents are read first, but a
  set's labelled latents are its strongest ones, and their shares can differ from the set's
  (docs/agent.md measures a wrong, "significant" sign at a 25% budget).

Stops, in this order: the latent or judge-call budget is spent ("budget"); every comparison that has
latents on both sides has all its category CIs narrower than `ci_width` percentage points, no set
is still empty, and every set has at least `ci_min_per_set` labels or all of its candidates
("ci_width"); no candidate is left ("all candidates labelled").
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from typing import Any

from pydantic import BaseModel, Field

log = logging.getLogger(__name__)

class Assessment(BaseModel):
    """What `assess` learnt from the findings so far."""

    widths: dict[str, float] = Field(description="Comparison 'A vs B' -> widest category CI (percentage points).")
    weights: dict[str, float] = Field(description="Set 'pair/side' -> priority weight in (0, 1].")
    narrow: bool = Field(description="Every comparison with latents on both sides is narrower than ci_width.")


def groups_of(rows: list[Any]) -> list[str]:
    """The (pair, side) sets a latent belongs to, as 'pair/side'."""
    return [f"{r.pair}/{r.side}" for r in rows if r.side in ("finetuned", "base", "shared")]


def _comparison_sets(cfg: Any) -> list[tuple[str, str, str]]:
    """(name, set A, set B) of every comparison the report makes."""
    pairs = [m.name for m in cfg.models if m.role != "base"]
    out = [(f"{p} vs reference ({p})", f"{p}/finetuned", f"{p}/shared") for p in pairs]
    out += [(f"base vs reference ({p})", f"{p}/base", f"{p}/shared") for p in pairs]
    if cfg.headline is not None:
        a, b = cfg.headline
        out.insert(0, (f"{a} vs {b}", f"{a}/finetuned", f"{b}/finetuned"))
    return out


def assess(cfg: Any, findings: list[Any], categories: list[str], queued: list[str],
           stats: dict[str, list[Any]]) -> Assessment:
    """CI widths of the comparisons so far and the weight of each set (see the module docstring)."""
    from latentdiff.agent.summary import build_aggregate

    agg = build_aggregate(cfg, findings, categories)
    comps = {f"{c.a} vs {c.b}" + (f" ({c.pair})" if c.b == "reference" else ""): c
             for c in ([agg.headline] if agg.headline else []) + agg.comparisons}
    queued_n = Counter(g for k in queued for g in groups_of(stats.get(k, [])))
    labelled_n = Counter(f"{f.pair}/{f.side}" for f in findings if f.label is not None)
    pending, labelled = set(queued_n), set(labelled_n)
    widths: dict[str, float] = {}
    set_width: dict[str, float] = {}
    narrow = True
    for name, a, b in _comparison_sets(cfg):
        comp = comps.get(name)
        empty = [s for s in (a, b) if s not in labelled]
        if comp is None or empty:
            if any(s in pending for s in empty):  # a side has candidates but no label yet
                narrow = False
                for s in (a, b):
                    set_width[s] = math.inf
            continue
        width = max((c.ci95[1] - c.ci95[0] for c in comp.categories), default=0.0)
        widths[name] = width
        # a bootstrap over a handful of latents is too sure of itself: a set counts once it has
        # ci_min_per_set labels (or all of its candidates, when it has fewer)
        enough = all(labelled_n[s] >= min(cfg.agent.ci_min_per_set, labelled_n[s] + queued_n[s]) for s in (a, b))
        narrow &= cfg.agent.ci_width is not None and width < cfg.agent.ci_width and enough
        for s in (a, b):
            set_width[s] = max(set_width.get(s, 0.0), width)
    finite = [w for w in set_width.values() if math.isfinite(w)]
    top = max(finite, default=1.0) or 1.0
    weights = {s: 1.0 if not math.isfinite(w) else max(w / top, 0.05) for s, w in set_width.items()}
    if cfg.agent.ci_width is None:
        narrow = False
    return Assessment(widths=widths, weights=weights, narrow=narrow)


def wave_capacity(cfg: Any, n_done: int, calls_used: int, calls_at_start: int, n_new: int) -> tuple[int, str]:
    """How many latents the next wave may take, and the budget that limits it ('' when none does).

    `n_done` latents have findings; `n_new` of them were labelled by this run with
    `calls_used - calls_at_start` judge calls (the mean sizes the call budget's waves).
    """
    agent = cfg.agent
    size = agent.wave_size or max(8, math.ceil((agent.max_latents or 40) / 5))
    room, why = size, ""
    if agent.max_latents is not None:
        left = agent.max_latents - n_done
        if left < room:
            room, why = max(left, 0), "max_latents"
    if agent.max_judge_calls is not None:
        # before any latent of this run is done, assume the least a latent costs (one call): the shared
        # Budget still refuses calls past the limit, so a first wave can only under-, never overspend
        per = (calls_used - calls_at_start) / n_new if n_new else 1.0
        left_calls = agent.max_judge_calls - calls_used
        fit = int(left_calls // max(per, 1.0))
        if fit < room:
            room, why = max(fit, 0), "max_judge_calls"
    return room, why


def random_order(keys: list[str], seed: int) -> list[str]:
    """keys in a seeded pseudo-random order (a hash of seed and key: stable across resumes and processes)."""
    import hashlib

    return sorted(keys, key=lambda k: hashlib.sha256(f"{seed}:{k}".encode()).digest())


def pick_wave(queue: list[str], n: int, effect: dict[str, float], stats: dict[str, list[Any]],
              weights: dict[str, float]) -> list[str]:
    """The n queued latents with the largest effect size x set weight (ties: queue order)."""
    if n <= 0:
        return []

    def priority(key: str) -> float:
        sets = groups_of(stats.get(key, []))
        w = max((weights.get(s, 1.0) for s in sets), default=1.0) if weights else 1.0
        return effect[key] * w

    order = {k: i for i, k in enumerate(queue)}
    return sorted(queue, key=lambda k: (-priority(k), order[k]))[:n]
