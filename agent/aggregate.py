"""Per-category comparisons of two sets of labelled latents: counts, shares, a calibrated test, effects.

A comparison "A vs B" asks, for every category c, whether c is over- or under-represented among A's
latents relative to B's. Per category (agent/stats.py has the formulas and sources):
- raw counts k_A, k_B and shares k / n (no pseudo-count);
- the share difference in percentage points with Newcombe's interval (the primary effect, `diff_pp`,
  `ci95`), the log share ratio with the MOVER-R interval, and the paper's percent form
  100 (share_A / share_B - 1) derived from it (secondary; unbounded when B has none of c);
- the exact permutation test on set membership (Fisher's exact test), with Holm's correction across
  the categories of the comparison (or Benjamini-Hochberg); significant = adjusted p < alpha.
A comparison whose smaller set has fewer than `min_set` latents is not tested: it is reported as
"too few latents to compare (n)". Scaffolding latents (activation mostly on special or template
tokens) are left out of the counts by default and counted separately. Which sets are compared (the
headline's two definitions, each fine-tune vs the reference sample of shared latents, the control
contrast) is decided in agent/summary.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, Field

from latentdiff.agent import stats
from latentdiff.agent.replicates import ReplicateRow

Correction = Literal["holm", "bh"]
TEST_NAME = "exact permutation test on set membership (Fisher's exact test), two-sided"


class LatentPoint(BaseModel):
    """The minimum the aggregator needs from a finding."""

    key: str = Field(description="Latent key (crosscoder:id).")
    category: str = Field(description="Judge's category.")
    verification: float | None = Field(default=None, description="Detection score.")
    scaffold: bool = Field(default=False, description="Activation mostly on special / template tokens.")


class CategoryShift(BaseModel):
    """One category's row of a comparison."""

    name: str = Field(description="Category.")
    n_a: int = Field(description="Latents of set A in this category.")
    n_b: int = Field(description="Latents of set B in this category.")
    share_a: float = Field(description="Share of A's latents in this category, n_a / |A| (raw).")
    share_b: float = Field(description="Share of B's latents in this category, n_b / |B| (raw).")
    diff_pp: float = Field(description="100 * (share_a - share_b): percentage points (the primary effect).")
    ci95: tuple[float, float] = Field(description="95% interval of diff_pp (Newcombe's hybrid score interval).")
    log_ratio: float | None = Field(
        description="ln(share_a / share_b); None when infinite (one set has none) or undefined (neither has any)."
    )
    ci95_log_ratio: tuple[float | None, float | None] = Field(
        description="95% MOVER-R interval of log_ratio; None = unbounded (-inf below, +inf above)."
    )
    shift_pct: float | None = Field(
        description="The paper's percent form 100 * (share_a / share_b - 1), raw shares; None when B has none "
        "of the category (unbounded) or neither set has any."
    )
    ci95_shift_pct: tuple[float | None, float | None] = Field(
        description="95% interval of shift_pct (from the log-ratio interval); None above = unbounded."
    )
    p_value: float | None = Field(description="Two-sided exact permutation p-value (None: not tested).")
    p_adjusted: float | None = Field(description="p-value adjusted across the comparison's categories.")
    direction: Literal["+", "-", "0"] = Field(description="Sign of diff_pp.")
    significant: bool = Field(description="Tested, and p_adjusted < alpha.")
    verification_a: float | None = Field(default=None, description="Mean detection score in A.")
    verification_b: float | None = Field(default=None, description="Mean detection score in B.")

    def estimate_text(self) -> str:
        """'+12.3 pp [+4.0, +20.1]' (the primary effect and its interval)."""
        return f"{self.diff_pp:+.1f} pp [{self.ci95[0]:+.1f}, {self.ci95[1]:+.1f}]"


class Comparison(BaseModel):
    """A vs B over all categories."""

    a: str = Field(description="Name of set A (e.g. 'shift').")
    b: str = Field(description="Name of set B (e.g. 'it' or 'reference').")
    kind: Literal["headline", "headline_alt", "vs_reference", "control", "replicate"] = Field(
        default="headline", description="What the comparison is for."
    )
    sets: str = Field(default="", description="Set definition (e.g. 'exclusive', 'overlapping', 'reference').")
    pair: str | None = Field(default=None, description="The (base, X) pair the sets come from, when one.")
    description: str = Field(description="What the sets are.")
    n_a: int = Field(description="Latents of A counted (labelled, scaffolding left out unless configured).")
    n_b: int = Field(description="Latents of B counted.")
    n_scaffold_a: int = Field(default=0, description="Scaffolding latents of A left out of the shares.")
    n_scaffold_b: int = Field(default=0, description="Scaffolding latents of B left out of the shares.")
    status: Literal["ok", "too_few"] = Field(default="ok", description="'too_few': a set is below min_set; no test.")
    note: str | None = Field(default=None, description="e.g. 'too few latents to compare (4)'.")
    test: str = Field(default=TEST_NAME, description="The test of each category.")
    correction: Correction = Field(default="holm", description="Multiplicity correction across categories.")
    alpha: float = Field(default=0.05, description="Family-wise (holm) or false-discovery (bh) level.")
    categories: list[CategoryShift] = Field(description="One row per category.")

    @property
    def tested(self) -> bool:
        """Both sets are large enough to compare."""
        return self.status == "ok"

    def row(self, name: str) -> CategoryShift | None:
        """The row of one category."""
        return next((c for c in self.categories if c.name == name), None)


def _category_index(categories: Sequence[str]) -> dict[str, int]:
    return {c: i for i, c in enumerate(categories)}


def _counts(points: Sequence[LatentPoint], categories: Sequence[str]) -> list[int]:
    index = _category_index(categories)
    other = index.get("other", len(categories) - 1)
    out = [0] * len(categories)
    for p in points:
        out[index.get(p.category, other)] += 1
    return out


def compare(
    a_name: str,
    a: Sequence[LatentPoint],
    b_name: str,
    b: Sequence[LatentPoint],
    categories: Sequence[str],
    description: str,
    *,
    alpha: float = 0.05,
    correction: Correction = "holm",
    min_set: int = 10,
    exclude_scaffold: bool = True,
    kind: str = "headline",
    sets: str = "",
    pair: str | None = None,
) -> Comparison:
    """Counts, shares, effects with intervals, and corrected exact tests of A's categories against B's."""
    scaf_a = sum(p.scaffold for p in a) if exclude_scaffold else 0
    scaf_b = sum(p.scaffold for p in b) if exclude_scaffold else 0
    if exclude_scaffold:
        a = [p for p in a if not p.scaffold]
        b = [p for p in b if not p.scaffold]
    na, nb = len(a), len(b)
    ka, kb = _counts(a, categories), _counts(b, categories)
    smaller = min(na, nb)
    tested = smaller >= max(min_set, 1)
    pvals = [stats.permutation_p(ka[i], na, kb[i], nb) for i in range(len(categories))] if tested else []
    padj = stats.adjust(pvals, correction) if tested else []
    rows = []
    for i, c in enumerate(categories):
        if na and nb:
            d, (lo, hi) = stats.share_diff(ka[i], na, kb[i], nb)
            lr, lr_ci = stats.log_ratio(ka[i], na, kb[i], nb)
            pct, pct_ci = stats.paper_pct(ka[i], na, kb[i], nb, lr_ci)
        else:  # an empty set: nothing to estimate
            d, lo, hi, lr, lr_ci, pct, pct_ci = 0.0, -1.0, 1.0, None, (None, None), None, (None, None)
        ver_a = [p.verification for p in a if p.category == c and p.verification is not None]
        ver_b = [p.verification for p in b if p.category == c and p.verification is not None]
        rows.append(CategoryShift(
            name=c, n_a=ka[i], n_b=kb[i], share_a=ka[i] / na if na else 0.0, share_b=kb[i] / nb if nb else 0.0,
            diff_pp=100 * d, ci95=(100 * lo, 100 * hi), log_ratio=lr, ci95_log_ratio=lr_ci,
            shift_pct=pct, ci95_shift_pct=pct_ci,
            p_value=pvals[i] if tested else None, p_adjusted=padj[i] if tested else None,
            direction="+" if d > 0 else "-" if d < 0 else "0",
            significant=bool(tested and padj[i] < alpha),
            verification_a=sum(ver_a) / len(ver_a) if ver_a else None,
            verification_b=sum(ver_b) / len(ver_b) if ver_b else None,
        ))
    note = None if tested else f"too few latents to compare ({smaller})"
    return Comparison(a=a_name, b=b_name, kind=kind, sets=sets, pair=pair, description=description, n_a=na, n_b=nb,
                      n_scaffold_a=scaf_a, n_scaffold_b=scaf_b, status="ok" if tested else "too_few", note=note,
                      correction=correction, alpha=alpha, categories=rows)


# --------------------------------------------------------------------------- the run's aggregate (aggregate.json)


AGGREGATE_VERSION = 2  # 2: exact tests with a correction, reference sets, control contrast, replicates


class Failure(BaseModel):
    """A latent that could not be labelled."""

    key: str = Field(description="Latent key.")
    reason: str = Field(description="Why.")


class RefinementRow(BaseModel):
    """How many labels of a category needed refinement, and what it did to their verification."""

    category: str = Field(description="Category of the kept label.")
    n_labelled: int = Field(description="Labelled latents in this category.")
    n_refined: int = Field(description="Of those, latents that went through at least one refinement round.")
    n_changed: int = Field(description="Refined latents whose kept label is not the first one.")
    verification_before: float | None = Field(description="Mean detection score of the first labels (refined).")
    verification_after: float | None = Field(description="Mean detection score of the kept labels (refined).")


class ConfidenceView(BaseModel):
    """The comparisons redone the other way round with respect to low-confidence labels."""

    threshold: float = Field(description="report.low_confidence: calibrated confidence below this is low.")
    low_confidence: list[str] = Field(description="Latents whose label is low-confidence.")
    excluded: bool = Field(description="True: these comparisons leave low-confidence labels out (the main ones "
                           "keep them); False: these keep them (the main ones leave them out).")
    comparisons: list[Comparison] = Field(description="Headline (both set definitions) and vs-reference comparisons.")


class Aggregate(BaseModel):
    """Per-category comparisons of a run (aggregate.json)."""

    version: int = Field(default=AGGREGATE_VERSION, description="Schema version.")
    judge: str = Field(description="Judge spec that produced the labels.")
    categories: list[str] = Field(description="Taxonomy categories, in order.")
    test: str = Field(default=TEST_NAME, description="The test of each category.")
    correction: str = Field(default="holm", description="Multiplicity correction across a comparison's categories.")
    alpha: float = Field(default=0.05, description="Significance level after correction.")
    min_set_size: int = Field(default=10, description="Smaller set below this: 'too few latents to compare'.")
    headline: Comparison | None = Field(description="The configured A-vs-B comparison, with the configured sets.")
    headline_alt: Comparison | None = Field(
        default=None, description="The headline with the other set definition (joint design: exclusive <-> "
        "the paper's overlapping sets), reported side by side."
    )
    comparisons: list[Comparison] = Field(
        description="Each fine-tune's (and the control's) specific latents, and each pair's base-specific "
        "latents, vs the reference sample of shared latents."
    )
    control: list[Comparison] = Field(
        default_factory=list, description="Control contrast per fine-tune: its specific latents (not also "
        "control-specific) vs the control's specific latents, i.e. the difference of their log share ratios "
        "against a common reference, tested jointly."
    )
    replicates: list[ReplicateRow] = Field(
        default_factory=list, description="Per comparison and category: agreement across crosscoder seeds."
    )
    n_replicates: int = Field(default=1, description="Crosscoders (seeds) whose findings were aggregated.")
    scaffold: list[str] = Field(default_factory=list, description="Latents flagged as scaffolding.")
    n_latents: int = Field(description="Latents with findings.")
    n_labelled: int = Field(description="Latents with a valid label.")
    failures: list[Failure] = Field(description="Latents whose labelling failed, with reasons.")
    skipped: list[str] = Field(default_factory=list, description="Candidates left unlabelled by budget.")
    stop_reason: str | None = Field(
        default=None, description="Why labelling stopped (budget, ci_width, all candidates labelled)."
    )
    verification: dict[str, float] = Field(description="Mean detection score per category.")
    refinement: list[RefinementRow] = Field(
        default_factory=list, description="Per category: labels that needed refinement and their verification."
    )
    confidence: ConfidenceView | None = Field(
        default=None, description="The primary crosscoder's comparisons the other way round with respect to "
        "low-confidence labels (report.low_confidence, agent/confidence.py)."
    )

    def all_comparisons(self) -> list[Comparison]:
        """Headline (both set definitions), vs-reference and control comparisons, in that order."""
        head = [c for c in (self.headline, self.headline_alt) if c is not None]
        return head + self.comparisons + self.control
