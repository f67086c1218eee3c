"""The statistics of a category comparison: an exact permutation test, a multiplicity correction, and
effect sizes with intervals that contain their estimates.

Two sets of labelled latents A (n_A of them) and B (n_B), and one category c with k_A and k_B latents:

- **Test.** Under H0 "set membership is unrelated to the category" (the latents of A and B are
  exchangeable), every assignment of the n_A + n_B latents to sets of sizes n_A and n_B is equally
  likely, so k_A is hypergeometric given k_A + k_B. The permutation test on set membership is
  therefore computed exactly, without Monte Carlo error: it is Fisher's exact test of the 2x2 table
  [[k_A, n_A - k_A], [k_B, n_B - k_B]] (two-sided: the tables no more likely than the observed one,
  `scipy.stats.fisher_exact`). It holds its level for small and unequal sets, unlike a bootstrap
  percentile interval (measured in docs/benchmarks.md, "Calibration").
- **Correction.** The categories of one comparison form one family; Holm's step-down procedure
  (default) controls the family-wise error rate, Benjamini-Hochberg (`bh`) the false discovery
  rate. A category is significant when its adjusted p-value is below alpha.
- **Effects.** Raw shares p = k / n (no pseudo-count); the share difference in percentage points with
  Newcombe's hybrid score interval (Newcombe 1998, method 10: Wilson intervals of each share, combined
  by the square-and-add rule), and the log share ratio with the MOVER-R interval (Donner and Zou
  2012, from the same Wilson intervals). Both intervals contain their estimates by construction.
  When B has none of the category the ratio is unbounded: the estimate is None ("only in A") and the
  upper bound None (+inf); when A has none, the lower bound is None (-inf). The paper's percent form
  100 (p_A / p_B - 1) is derived from the ratio and its interval.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

Z95 = 1.959963984540054


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion k / n (n > 0)."""
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def share_diff(k_a: int, n_a: int, k_b: int, n_b: int, z: float = Z95) -> tuple[float, tuple[float, float]]:
    """p_A - p_B and Newcombe's hybrid score interval (both as fractions)."""
    pa, pb = k_a / n_a, k_b / n_b
    la, ua = wilson(k_a, n_a, z)
    lb, ub = wilson(k_b, n_b, z)
    d = pa - pb
    return d, (d - math.sqrt((pa - la) ** 2 + (ub - pb) ** 2), d + math.sqrt((ua - pa) ** 2 + (pb - lb) ** 2))


def log_ratio(k_a: int, n_a: int, k_b: int, n_b: int,
              z: float = Z95) -> tuple[float | None, tuple[float | None, float | None]]:
    """ln(p_A / p_B) and its MOVER-R interval; None marks an infinite (or, for 0 vs 0, undefined) value."""
    if k_a == 0 and k_b == 0:
        return None, (None, None)
    pa, pb = k_a / n_a, k_b / n_b
    la, ua = wilson(k_a, n_a, z)
    lb, ub = wilson(k_b, n_b, z)
    prod = pa * pb
    lo_den = ub * (2 * pb - ub)
    lo_num = prod - math.sqrt(max(prod * prod - la * ub * (2 * pa - la) * (2 * pb - ub), 0.0))
    lo = lo_num / lo_den if lo_den != 0 else 0.0
    hi_den = lb * (2 * pb - lb)
    hi = (prod + math.sqrt(max(prod * prod - ua * lb * (2 * pa - ua) * (2 * pb - lb), 0.0))) / hi_den \
        if hi_den > 0 else math.inf
    est = math.log(pa / pb) if pa > 0 and pb > 0 else None
    lo_log = math.log(lo) if lo > 0 else None
    hi_log = math.log(hi) if math.isfinite(hi) else None
    if est is not None:  # guard against rounding at the boundary: the interval holds its estimate
        lo_log = min(lo_log, est) if lo_log is not None else None
        hi_log = max(hi_log, est) if hi_log is not None else None
    return est, (lo_log, hi_log)


def permutation_p(k_a: int, n_a: int, k_b: int, n_b: int) -> float:
    """Two-sided exact p-value of the permutation test on set membership (= Fisher's exact test)."""
    from scipy.stats import fisher_exact

    if k_a + k_b == 0 or k_a + k_b == n_a + n_b:
        return 1.0
    return float(fisher_exact([[k_a, n_a - k_a], [k_b, n_b - k_b]], alternative="two-sided").pvalue)


def adjust(pvalues: Sequence[float], method: Literal["holm", "bh"] = "holm") -> list[float]:
    """Holm (family-wise error) or Benjamini-Hochberg (false discovery rate) adjusted p-values."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    out = [1.0] * m
    if method == "holm":
        running = 0.0
        for rank, i in enumerate(order):
            running = max(running, min(1.0, (m - rank) * pvalues[i]))
            out[i] = running
    else:
        running = 1.0
        for rank in range(m - 1, -1, -1):
            i = order[rank]
            running = min(running, pvalues[i] * m / (rank + 1))
            out[i] = min(1.0, running)
    return out


def paper_pct(k_a: int, n_a: int, k_b: int, n_b: int, log_ci: tuple[float | None, float | None]
              ) -> tuple[float | None, tuple[float | None, float | None]]:
    """The paper's percent form 100 (p_A / p_B - 1) and its interval from the log-ratio interval.

    None marks +inf (B has none of the category) or, for 0 vs 0, an undefined value; a lower
    log bound of -inf is -100%.
    """
    if k_b == 0:
        est = None
    else:
        est = 100.0 * ((k_a / n_a) / (k_b / n_b) - 1.0)
    lo = -100.0 if log_ci[0] is None else 100.0 * (math.exp(log_ci[0]) - 1.0)
    hi = None if log_ci[1] is None else 100.0 * (math.exp(log_ci[1]) - 1.0)
    if k_a == 0 and k_b == 0:
        return None, (None, None)
    return est, (lo, hi)
