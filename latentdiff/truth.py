"""The scientific check on the organisms: does a run's report recover the planted truth?

Nothing stored as a verdict is trusted: from each comparison's raw counts (latents per category and
set sizes) the check recomputes the exact permutation p-values, the correction across categories
and the share-difference interval, compares them with what the report says (a mismatch fails), and
decides every verdict itself. It passes only when all of these hold:
- the headline exists and compares the planted pair (in either order: signs are flipped to follow
  the report's order), and every planted headline sign ('+' / '-') is significant after correction,
  in the planted direction, with a 95% interval that excludes 0 on that side;
- every fine-tune with planted streams has its "vs reference" comparison, tested (not "too few"),
  and each planted stream is significantly over-represented among its specific latents;
- every model planted with nothing (a control) that is in the run shows no significant category vs
  the reference (or has too few specific latents to test, which is said);
- at least one sign was checked, and no planted comparison is missing.
`flip=True` checks against the planted signs reversed: a negative control that must fail.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from latentdiff.agent import stats

FLIP = {"+": "-", "-": "+"}


class TruthCheck(BaseModel):
    """Outcome of the ground-truth check."""

    ok: bool = Field(description="Every condition holds (known failures aside, which must still fail).")
    lines: list[str] = Field(description="One line per condition, 'ok', 'FAIL' or 'XFAIL' (a known failure).")
    checked: int = Field(default=0, description="Planted signs and streams checked.")
    failed: list[str] = Field(default_factory=list, description="Ids of the planted checks that failed.")


def load_known_failures(path: Path) -> dict[str, str]:
    """Known failures: {check id: reason}, e.g. {"headline:instruction_following": "..."}."""
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise ValueError(f"{path}: expected a JSON object of check id -> reason")
    return data


def apply_known_failures(result: TruthCheck, known: dict[str, str]) -> TruthCheck:
    """Strict expected failures (like pytest's strict xfail): a known failure that fails is reported as
    XFAIL and does not fail the check; one that passes (or was not checked) fails it, so the list
    cannot go stale. Every other condition must hold."""
    lines, ok = [], True
    for line in result.lines:
        cid = line.split("[", 1)[1].split("]", 1)[0] if line.startswith("FAIL: [") else None
        if cid is not None and cid in known:
            lines.append(f"XFAIL: {line[len('FAIL: '):]} (known failure: {known[cid]})")
        else:
            ok &= not line.startswith("FAIL")
            lines.append(line)
    for cid, reason in known.items():
        if cid not in result.failed:
            ok = False
            lines.append(f"FAIL: [{cid}] listed as a known failure ({reason}) but it did not fail: update the list")
    return TruthCheck(ok=ok, lines=lines, checked=result.checked, failed=result.failed)


class _Row(BaseModel):
    name: str
    n_a: int
    n_b: int
    p_adjusted: float | None
    significant: bool
    direction: str
    diff_pp: float
    ci95: tuple[float, float]


def recompute(comp: dict[str, Any]) -> tuple[list[_Row], list[str]]:
    """Rows recomputed from a comparison's counts, and every disagreement with its stored values."""
    na, nb = int(comp["n_a"]), int(comp["n_b"])
    cats = comp["categories"]
    tested = comp.get("status") == "ok"
    problems = []
    if sum(c["n_a"] for c in cats) != na or sum(c["n_b"] for c in cats) != nb:
        problems.append(f"{comp['a']} vs {comp['b']}: category counts do not add up to the set sizes")
    if tested and min(na, nb) < 1:
        problems.append(f"{comp['a']} vs {comp['b']}: marked tested with an empty set")
    tested = tested and min(na, nb) >= 1
    pvals = [stats.permutation_p(c["n_a"], na, c["n_b"], nb) for c in cats] if tested else []
    padj = stats.adjust(pvals, comp.get("correction", "holm")) if tested else []
    alpha = float(comp.get("alpha", 0.05))
    rows = []
    for i, c in enumerate(cats):
        d, ci = stats.share_diff(c["n_a"], na, c["n_b"], nb) if na and nb else (0.0, (-1.0, 1.0))
        row = _Row(name=c["name"], n_a=c["n_a"], n_b=c["n_b"], p_adjusted=padj[i] if tested else None,
                   significant=bool(tested and padj[i] < alpha), direction="+" if d > 0 else "-" if d < 0 else "0",
                   diff_pp=100 * d, ci95=(100 * ci[0], 100 * ci[1]))
        if bool(c.get("significant")) != row.significant or c.get("direction", row.direction) != row.direction:
            problems.append(f"{comp['a']} vs {comp['b']} {c['name']}: the report says significant="
                            f"{c.get('significant')} {c.get('direction')}, its counts give {row.significant} "
                            f"{row.direction}")
        rows.append(row)
    return rows, problems


def _sign_ok(row: _Row, sign: str) -> bool:
    lo, hi = row.ci95
    excludes = lo > 0 if sign == "+" else hi < 0
    return row.significant and row.direction == sign and excludes


def _fmt(row: _Row) -> str:
    p = "not tested" if row.p_adjusted is None else f"p_adj {row.p_adjusted:.3g}"
    return (f"{row.n_a} vs {row.n_b} latents, {row.diff_pp:+.1f} pp [{row.ci95[0]:+.1f}, {row.ci95[1]:+.1f}], {p}")


def check(report: dict[str, Any], planted: dict[str, Any] | None = None, flip: bool = False) -> TruthCheck:
    """Check a report (report.json as a dict) against planted truth (default: the truth it carries)."""
    planted = planted or report.get("planted")
    if not planted:
        return TruthCheck(ok=False, lines=["FAIL: no planted truth (not an organism run; pass --planted FILE)"])
    comps = report.get("comparisons") or []
    lines: list[str] = []
    ok, checked = True, 0

    failed: list[str] = []

    def fail(msg: str) -> None:
        nonlocal ok
        ok = False
        lines.append(f"FAIL: {msg}")

    def record(good: bool, cid: str, msg: str) -> None:
        """One planted check, with its id (for known failures)."""
        nonlocal ok
        ok &= good
        if not good:
            failed.append(cid)
        lines.append(f"{'ok' if good else 'FAIL'}: [{cid}] {msg}")

    recomputed = {id(comp): recompute(comp) for comp in comps}  # rows from the counts, and disagreements
    for comp in comps:  # every comparison's stored verdicts must follow from its counts
        for problem in recomputed[id(comp)][1]:
            fail(f"report inconsistent: {problem}")
    flip_sign = (lambda s: FLIP.get(s, s)) if flip else (lambda s: s)

    head_truth = planted.get("headline") or {}
    signs = {c: flip_sign(s) for c, s in (head_truth.get("signs") or {}).items() if s in ("+", "-")}
    if signs:
        head = next((c for c in comps if c.get("kind") == "headline"), None)
        pair = (head_truth.get("a"), head_truth.get("b"))
        if head is None:
            fail(f"no headline comparison in the report (planted headline {pair[0]} vs {pair[1]})")
        elif (head["a"], head["b"]) not in (pair, pair[::-1]):
            fail(f"the headline compares {head['a']} vs {head['b']}, the planted headline is {pair[0]} vs {pair[1]}")
        elif head.get("status") != "ok":
            fail(f"headline {head['a']} vs {head['b']}: not tested ({head.get('note')})")
        else:
            order_flip = (head["a"], head["b"]) != pair
            rows = {r.name: r for r in recomputed[id(head)][0]}
            for cat, sign in signs.items():
                sign = FLIP[sign] if order_flip else sign
                row = rows.get(cat)
                if row is None:
                    fail(f"headline {head['a']} vs {head['b']}: no row for planted category {cat}")
                    continue
                checked += 1
                good = _sign_ok(row, sign)
                record(good, f"headline:{cat}", f"headline {head['a']} vs {head['b']} ({head.get('sets')}) "
                                                f"{cat}: planted {sign}, {_fmt(row)}")

    models = {m["name"] for m in report.get("models", [])}
    for model, streams in (planted.get("planted") or {}).items():
        if model not in models:
            continue
        comp = next((c for c in comps if c.get("kind") == "vs_reference" and c["a"] == model), None)
        if comp is None:
            fail(f"{model} vs reference: comparison missing from the report")
            continue
        if not streams:  # planted with nothing: a control
            if comp.get("status") != "ok":
                lines.append(f"ok: {model} vs reference: nothing to test ({comp.get('note')})")
                continue
            sig = [r for r in recomputed[id(comp)][0] if r.significant]
            checked += 1
            record(not sig, f"{model}:nothing", f"{model} vs reference (planted nothing): "
                                                f"{len(sig)} significant categories {[r.name for r in sig]}")
            continue
        if comp.get("status") != "ok":
            fail(f"{model} vs reference: not tested ({comp.get('note')}); planted streams {streams}")
            continue
        rows = {r.name: r for r in recomputed[id(comp)][0]}
        for cat in streams:
            sign = flip_sign("+")
            row = rows.get(cat)
            if row is None:
                fail(f"{model} vs reference: no row for planted stream {cat}")
                continue
            checked += 1
            record(_sign_ok(row, sign), f"{model}:{cat}", f"{model} vs reference {cat}: planted {sign}, {_fmt(row)}")
    if checked == 0:
        fail("no planted sign or stream was checked")
    return TruthCheck(ok=ok, lines=lines, checked=checked, failed=failed)


def with_oracle_labels(report: dict[str, Any]) -> dict[str, Any]:
    """The report with its comparisons recomputed from oracle labels (the majority stream of each latent's
    top examples, `agent/oracle.py`) in place of the judge's: the same sets, tests and correction, so a
    check that passes with these and fails with the judge's points at the judge, and one that fails with
    both at the crosscoder, the selection or the organisms."""
    from latentdiff.errors import LatentDiffError

    oracle = report.get("oracle") or {}
    if not oracle.get("comparisons"):
        raise LatentDiffError("the report has no oracle labels (they exist for runs on the organism corpus only)")
    return {**report, "comparisons": oracle["comparisons"]}


def check_report(report_path: Path, planted_path: Path | None = None, flip: bool = False,
                 known_failures: Path | None = None, oracle: bool = False) -> TruthCheck:
    """Check report.json against the planted truth it carries (or the planted.json given); with `oracle`,
    the comparisons made with oracle labels (`with_oracle_labels`)."""
    from latentdiff.errors import CorruptFile
    from latentdiff.io import read_json

    report = read_json(Path(report_path), "report")  # unreadable or not JSON: one line naming the file
    if not isinstance(report, dict):
        raise CorruptFile(f"{report_path}: not a report of this latentdiff version (a JSON object expected)")
    if oracle:
        report = with_oracle_labels(report)
    planted = json.loads(Path(planted_path).read_text()) if planted_path else None
    result = check(report, planted, flip)
    return apply_known_failures(result, load_known_failures(known_failures)) if known_failures else result
