"""The ground-truth check on report.json (synthetic reports; the real one runs in CI on the demo)."""

from __future__ import annotations

import json
from pathlib import Path

from latentdiff.truth import check_report


def _report(tmp: Path, rows: list[dict], control_sig: list[str] | None, planted: bool = True) -> Path:
    comps = []
    if control_sig is not None:
        comps.append({"a": "null", "b": "base", "n_a": 5,
                      "categories": [{"name": c, "significant": c in control_sig} for c in ("safety", "other")]})
    report = {"planted": {"headline": {}} if planted else None, "categories": rows, "comparisons": comps,
              "models": [{"name": "base", "role": "base"}, {"name": "null", "role": "control"}]}
    path = tmp / "report.json"
    path.write_text(json.dumps(report))
    return path


def _row(name: str, sign: str, shift: float, recovered: bool) -> dict:
    return {"name": name, "planted": sign, "shift_pct": shift, "ci95": [shift - 10, shift + 10], "recovered": recovered}


def test_all_recovered_passes(tmp_path: Path) -> None:
    rows = [_row("safety", "+", 50, True), _row("hallucination", "-", -40, True),
            {"name": "other", "planted": None, "shift_pct": 3, "ci95": [-5, 9], "recovered": None}]
    result = check_report(_report(tmp_path, rows, control_sig=[]))
    assert result.ok and len(result.lines) == 3 and all(x.startswith("ok") for x in result.lines)


def test_missed_sign_or_significant_control_fails(tmp_path: Path) -> None:
    assert not check_report(_report(tmp_path, [_row("safety", "+", 5, False)], control_sig=[])).ok
    result = check_report(_report(tmp_path, [_row("safety", "+", 50, True)], control_sig=["safety"]))
    assert not result.ok and any(x.startswith("FAIL: control") for x in result.lines)
    assert not check_report(_report(tmp_path, [], control_sig=None, planted=False)).ok
