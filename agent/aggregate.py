"""Per-category shifts between two sets of model-specific latents, with bootstrap 95% CIs.

For a comparison "A vs B" (e.g. shift-specific vs it-specific latents, or a fine-tune's specific
latents vs the base's), each category c gets
    share_X(c) = (n_X(c) + alpha) / (n_X + alpha * K)          (alpha = 0.5, K categories)
    shift(c)   = 100 * (share_A(c) / share_B(c) - 1)            (percent, as the paper reports)
The pseudo-count keeps the ratio finite when a category is absent from B; raw counts are reported
beside it. A category with no latent in either set is never "significant": its shift is only the
pseudo-count over two set sizes ((n_B + alpha K) / (n_A + alpha K) - 1), and every bootstrap
resample repeats it, so its CI is narrow without any evidence. Confidence intervals come from a
bootstrap that resamples latents within each set AND documents (each latent weighted by the
resample multiplicity of the documents its examples came from), because CIs over latents alone gave
null-vs-null controls false "significant" shifts (shared METHOD.md section 6). A frequency-weighted
variant weights each latent by its activation frequency.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, Field, PrivateAttr

ALPHA = 0.5


class LatentPoint(BaseModel):
    """The minimum the aggregator needs from a finding."""

    key: str = Field(description="Latent key (crosscoder:id).")
    category: str = Field(description="Judge's category.")
    freq: float = Field(default=0.0, description="Activation frequency.")
    doc_ids: list[int] = Field(default_factory=list, description="Documents of its examples.")
    verification: float | None = Field(default=None, description="Detection score.")


class CategoryShift(BaseModel):
    """One category's row of an aggregate table."""

    name: str = Field(description="Category.")
    n_a: int = Field(description="Latents of set A in this category.")
    n_b: int = Field(description="Latents of set B in this category.")
    share_a: float = Field(description="Smoothed share in A.")
    share_b: float = Field(description="Smoothed share in B.")
    shift_pct: float = Field(description="100 * (share_a / share_b - 1).")
    ci95: tuple[float, float] = Field(description="Bootstrap 95% CI over latents and documents.")
    ci95_latents: tuple[float, float] = Field(description="Bootstrap CI over latents only.")
    shift_pct_weighted: float = Field(description="Frequency-weighted shift.")
    ci95_weighted: tuple[float, float] = Field(description="CI of the weighted shift.")
    significant: bool = Field(description="ci95 excludes 0 and the category has a latent in A or B.")
    verification_a: float | None = Field(default=None, description="Mean detection score in A.")
    verification_b: float | None = Field(default=None, description="Mean detection score in B.")


class Comparison(BaseModel):
    """A vs B over all categories."""

    a: str = Field(description="Name of set A (e.g. 'shift').")
    b: str = Field(description="Name of set B (e.g. 'it' or 'base').")
    description: str = Field(description="What the sets are.")
    n_a: int = Field(description="Labelled latents in A.")
    n_b: int = Field(description="Labelled latents in B.")
    categories: list[CategoryShift] = Field(description="One row per category.")
    bootstrap: int = Field(description="Bootstrap resamples.")
    _boot: np.ndarray | None = PrivateAttr(default=None)  # [n_boot, K] joint bootstrap shifts


class NetShift(BaseModel):
    """One category's shift net of the control's own shift."""

    name: str = Field(description="Category.")
    shift_pct: float = Field(description="Fine-tune's shift minus the control's shift (percentage points).")
    ci95: tuple[float, float] = Field(description="Bootstrap 95% CI of the difference.")
    plain_shift_pct: float = Field(description="The fine-tune's shift vs base.")
    control_shift_pct: float = Field(description="The control's shift vs base.")
    significant: bool = Field(description="ci95 excludes 0 and the category has a latent in one of the sets.")


class NetComparison(BaseModel):
    """A fine-tune's per-category shifts vs base with the control's own shifts subtracted."""

    a: str = Field(description="Fine-tune.")
    control: str = Field(description="Control model (same base, trained further without the intervention).")
    description: str = Field(description="What was compared.")
    categories: list[NetShift] = Field(description="One row per category.")


def net_of_control(plain: Comparison, control: Comparison) -> NetComparison:
    """Subtract the control's shift from the fine-tune's, category by category (independent bootstraps)."""
    assert plain._boot is not None and control._boot is not None, "comparisons must come from compare()"
    diff = plain._boot - control._boot  # [n_boot, K]
    rows = []
    for k, (p, c) in enumerate(zip(plain.categories, control.categories)):
        ci = _ci(diff[:, k])
        evidence = p.n_a + p.n_b + c.n_a + c.n_b > 0  # a latent of this category in one of the four sets
        rows.append(NetShift(name=p.name, shift_pct=p.shift_pct - c.shift_pct, ci95=ci, plain_shift_pct=p.shift_pct,
                             control_shift_pct=c.shift_pct, significant=bool((ci[0] > 0 or ci[1] < 0) and evidence)))
    return NetComparison(a=plain.a, control=control.a, description=f"{plain.description}, minus the same for "
                         f"{control.a}", categories=rows)


def _shares(cat_idx: np.ndarray, weights: np.ndarray, K: int) -> np.ndarray:
    """Smoothed shares [..., K] from category indices [n] and weights [..., n]."""
    onehot = np.eye(K)[cat_idx]  # [n, K]
    counts = weights @ onehot  # [..., K]
    total = weights.sum(-1, keepdims=True)
    return (counts + ALPHA) / (total + ALPHA * K)


def _shift(sa: np.ndarray, sb: np.ndarray) -> np.ndarray:
    return 100.0 * (sa / sb - 1.0)


def _doc_weights(points: Sequence[LatentPoint], doc_mult: dict[int, float]) -> np.ndarray:
    return np.array([np.mean([doc_mult[d] for d in p.doc_ids]) if p.doc_ids else 1.0 for p in points])


def _ci(samples: np.ndarray) -> tuple[float, float]:
    lo, hi = np.nanpercentile(samples, [2.5, 97.5], axis=0)
    return float(lo), float(hi)


def compare(
    a_name: str,
    a: Sequence[LatentPoint],
    b_name: str,
    b: Sequence[LatentPoint],
    categories: Sequence[str],
    description: str,
    n_boot: int = 1000,
    seed: int = 0,
) -> Comparison:
    """Shares, shifts and bootstrap CIs of A's categories relative to B's."""
    K = len(categories)
    index = {c: i for i, c in enumerate(categories)}
    ca = np.array([index.get(p.category, index.get("other", K - 1)) for p in a], dtype=int)
    cb = np.array([index.get(p.category, index.get("other", K - 1)) for p in b], dtype=int)
    wa, wb = np.ones(len(a)), np.ones(len(b))
    fa = np.array([max(p.freq, 1e-9) for p in a])
    fb = np.array([max(p.freq, 1e-9) for p in b])
    point = _shift(_shares(ca, wa, K), _shares(cb, wb, K))  # [K]
    point_w = _shift(_shares(ca, fa, K), _shares(cb, fb, K))
    rng = np.random.default_rng(seed)
    docs = sorted({d for p in [*a, *b] for d in p.doc_ids})
    boot_lat, boot_all, boot_w = (np.full((n_boot, K), np.nan) for _ in range(3))
    for i in range(n_boot):
        ia = rng.integers(len(a), size=len(a)) if len(a) else np.zeros(0, dtype=int)
        ib = rng.integers(len(b), size=len(b)) if len(b) else np.zeros(0, dtype=int)
        mult = dict(zip(docs, rng.poisson(1.0, size=len(docs)).astype(float)))
        da, db = _doc_weights(a, mult), _doc_weights(b, mult)
        boot_lat[i] = _shift(_shares(ca[ia], wa[ia], K), _shares(cb[ib], wb[ib], K))
        boot_all[i] = _shift(_shares(ca[ia], da[ia], K), _shares(cb[ib], db[ib], K))
        boot_w[i] = _shift(_shares(ca[ia], fa[ia] * da[ia], K), _shares(cb[ib], fb[ib] * db[ib], K))
    rows = []
    for k, c in enumerate(categories):
        ci = _ci(boot_all[:, k])
        ver_a = [p.verification for p in a if p.category == c and p.verification is not None]
        ver_b = [p.verification for p in b if p.category == c and p.verification is not None]
        rows.append(CategoryShift(
            name=c, n_a=int((ca == k).sum()), n_b=int((cb == k).sum()),
            share_a=float(_shares(ca, wa, K)[k]), share_b=float(_shares(cb, wb, K)[k]),
            shift_pct=float(point[k]), ci95=ci, ci95_latents=_ci(boot_lat[:, k]),
            shift_pct_weighted=float(point_w[k]), ci95_weighted=_ci(boot_w[:, k]),
            significant=bool((ci[0] > 0 or ci[1] < 0) and ((ca == k).any() or (cb == k).any())),
            verification_a=float(np.mean(ver_a)) if ver_a else None,
            verification_b=float(np.mean(ver_b)) if ver_b else None,
        ))
    comparison = Comparison(a=a_name, b=b_name, description=description, n_a=len(a), n_b=len(b),
                            categories=rows, bootstrap=n_boot)
    comparison._boot = boot_all
    return comparison
