"""The scientific check on the organisms: does a run's report recover the planted truth?

Passes when every planted sign of the headline is recovered with a 95% CI that excludes 0, and the
control (`null`) shows no category whose CI excludes 0 against the base (or has no model-specific
latents at all, which is said plainly).
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, Field


class TruthCheck(BaseModel):
    """Outcome of the ground-truth check."""

    ok: bool = Field(description="Every condition holds.")
    lines: list[str] = Field(description="One line per condition, 'ok' or 'FAIL'.")


def check_report(report_path: Path) -> TruthCheck:
    """Check report.json against the planted truth it carries."""
    report = json.loads(Path(report_path).read_text())
    planted = report.get("planted")
    if not planted:
        return TruthCheck(ok=False, lines=["FAIL: the report has no planted truth (not an organism run)"])
    lines: list[str] = []
    ok = True
    for row in report["categories"]:
        sign = row.get("planted")
        if sign not in ("+", "-"):
            continue
        good = bool(row.get("recovered"))
        ok &= good
        lines.append(f"{'ok' if good else 'FAIL'}: headline {row['name']}: planted {sign}, recovered "
                     f"{row['shift_pct']:+.1f}% CI [{row['ci95'][0]:+.1f}, {row['ci95'][1]:+.1f}]")
    control = next((m["name"] for m in report["models"] if m["role"] == "control"), None)
    if control is not None:
        comp = next((c for c in report["comparisons"] if c["a"] == control and c["b"] == "base"), None)
        if comp is None or comp["n_a"] == 0:
            lines.append(f"ok: control {control} vs base: no model-specific latents")
        else:
            sig = [c["name"] for c in comp["categories"] if c["significant"]]
            ok &= not sig
            lines.append(f"{'ok' if not sig else 'FAIL'}: control {control} vs base: "
                         f"{len(sig)} categories with a CI excluding 0 {sig}")
    return TruthCheck(ok=ok, lines=lines)
