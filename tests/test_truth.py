"""The ground-truth check: every way it used to pass without checking anything now fails.

Reports are built with the real `compare()` (so they carry the real schema); the demo's report is
checked in CI (`latentdiff truth`, and `--flip-signs`, which must fail).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from latentdiff.agent.aggregate import LatentPoint, compare
from latentdiff.truth import check, check_report

CATS = ["safety", "multilingual", "instruction_following", "self_reference", "hallucination", "other"]
PLANTED = {
    "categories": CATS[:5],
    "headline": {"a": "shift", "b": "it", "signs": {"safety": "+", "self_reference": "-"}},
    "planted": {"it": ["self_reference"], "shift": ["safety"], "null": []},
}


def _pts(counts: dict[str, int], tag: str) -> list[LatentPoint]:
    return [LatentPoint(key=f"j:{tag}{c}{i}", category=c) for c, n in counts.items() for i in range(n)]


def _report(head=("shift", "it"), strong=True, control_sig=False, drop=(), null_n=0) -> dict:
    hi, lo = (20, 1) if strong else (3, 2)
    shift = _pts({"safety": hi, "self_reference": lo, "other": 20}, "s")
    it = _pts({"safety": lo, "self_reference": hi, "other": 20}, "i")
    ref = _pts({"other": 40, "safety": 1, "self_reference": 1}, "r")
    a, b = (shift, it) if head == ("shift", "it") else (it, shift)
    comps = [compare(head[0], a, head[1], b, CATS, "h", kind="headline", sets="exclusive"),
             compare("shift", shift, "reference", ref, CATS, "s", kind="vs_reference", pair="shift"),
             compare("it", it, "reference", ref, CATS, "i", kind="vs_reference", pair="it")]
    null = _pts({"safety": 15 if control_sig else 1, "other": max(null_n - 1, 0)}, "n")[: max(null_n, 0)] \
        if null_n else []
    comps.append(compare("null", null, "reference", ref, CATS, "n", kind="vs_reference", pair="null"))
    comps = [c for c in comps if c.kind + ":" + c.a not in drop]
    return {"planted": PLANTED, "comparisons": [c.model_dump(mode="json") for c in comps],
            "models": [{"name": n, "role": r} for n, r in
                       [("base", "base"), ("it", "finetune"), ("shift", "finetune"), ("null", "control")]]}


def test_recovered_and_each_verdict_recomputed() -> None:
    result = check(_report())
    assert result.ok, result.lines
    assert result.checked == 4  # two headline signs + one stream per fine-tune
    assert any("ok: null vs reference: nothing to test (too few latents to compare (0))" in x for x in result.lines)


def test_flipped_signs_fail() -> None:
    result = check(_report(), flip=True)
    assert not result.ok and sum(x.startswith("FAIL") for x in result.lines) == 4


def test_headline_in_the_other_order_is_checked_with_flipped_signs() -> None:
    assert check(_report(head=("it", "shift"))).ok
    assert not check(_report(head=("it", "shift")), flip=True).ok


def test_weak_signs_fail() -> None:
    assert not check(_report(strong=False)).ok


def test_no_headline_fails() -> None:
    result = check(_report(drop=("headline:shift",)))
    assert not result.ok and any("no headline comparison" in x for x in result.lines)


def test_missing_fine_tune_comparison_fails() -> None:
    result = check(_report(drop=("vs_reference:shift",)))
    assert not result.ok and any("shift vs reference: comparison missing" in x for x in result.lines)


def test_nothing_checked_fails() -> None:
    report = _report()
    report["planted"] = {"headline": {}, "planted": {}}
    result = check(report)
    assert not result.ok and any("no planted sign or stream was checked" in x for x in result.lines)


def test_no_planted_truth_fails() -> None:
    report = _report()
    report["planted"] = None
    assert not check(report).ok


def test_significant_control_fails() -> None:
    result = check(_report(control_sig=True, null_n=30))
    assert not result.ok
    assert any(x.startswith("FAIL: [null:nothing] null vs reference (planted nothing)") for x in result.lines)
    assert check(_report(control_sig=False, null_n=30)).ok


def test_stored_flags_are_not_trusted() -> None:
    """A report whose stored 'significant' flags were edited (or written by a buggy aggregate) fails."""
    report = _report(strong=False)
    head = report["comparisons"][0]
    for row in head["categories"]:
        row["significant"] = row["name"] in ("safety", "self_reference")
        row["recovered"] = True
    result = check(report)
    assert not result.ok and any("report inconsistent" in x for x in result.lines)


def test_untested_headline_fails() -> None:
    report = _report()
    report["comparisons"][0]["status"] = "too_few"
    assert not check(report).ok


def test_check_report_reads_files(tmp_path: Path) -> None:
    path = tmp_path / "report.json"
    path.write_text(json.dumps(_report()))
    planted = tmp_path / "planted.json"
    planted.write_text(json.dumps(PLANTED | {"planted": {"it": ["self_reference"], "shift": ["safety", "other"]}}))
    assert check_report(path).ok
    result = check_report(path, planted)  # 'other' is not over-represented among shift's latents
    assert not result.ok


@pytest.mark.parametrize("flip", [False, True])
def test_cli_exit_codes(tmp_path: Path, flip: bool) -> None:
    from typer.testing import CliRunner

    from latentdiff.cli import app

    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "report.json").write_text(json.dumps(_report()))
    args = ["truth", str(tmp_path)] + (["--flip-signs"] if flip else [])
    result = CliRunner().invoke(app, args)
    assert result.exit_code == (1 if flip else 0), result.output


def test_known_failures_are_strict(tmp_path: Path) -> None:
    """A listed failure that fails is XFAIL; one that passes fails the check; unlisted failures fail it."""
    from latentdiff.truth import apply_known_failures

    weak = check(_report(strong=False))
    assert set(weak.failed) == {"headline:safety", "headline:self_reference", "shift:safety", "it:self_reference"}
    known = {cid: "documented reason" for cid in weak.failed}
    result = apply_known_failures(weak, known)
    assert result.ok and sum(x.startswith("XFAIL") for x in result.lines) == 4
    assert not apply_known_failures(weak, dict(list(known.items())[:3])).ok  # an unlisted failure
    stale = apply_known_failures(check(_report()), {"headline:safety": "r"})  # listed but passes
    assert not stale.ok and any("did not fail: update the list" in x for x in stale.lines)
    path = tmp_path / "known.json"
    path.write_text(json.dumps(known))
    rp = tmp_path / "report.json"
    rp.write_text(json.dumps(_report(strong=False)))
    assert check_report(rp, known_failures=path).ok


def test_oracle_labels_are_checked_in_place_of_the_judges(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from latentdiff.cli import app

    weak, strong = _report(strong=False), _report()
    report = {**weak, "oracle": {"comparisons": strong["comparisons"]}}  # the judge misses, the oracle finds
    run = tmp_path / "run" / "report"
    run.mkdir(parents=True)
    (run / "report.json").write_text(json.dumps(report))
    assert not check_report(run / "report.json").ok
    assert check_report(run / "report.json", oracle=True).ok
    assert not check_report(run / "report.json", oracle=True, flip=True).ok
    runner = CliRunner()
    res = runner.invoke(app, ["truth", str(tmp_path / "run"), "--oracle"])
    assert res.exit_code == 0 and "ground truth (oracle labels): recovered" in res.output, res.output
    assert runner.invoke(app, ["truth", str(tmp_path / "run")]).exit_code == 1
    (run / "report.json").write_text(json.dumps(weak))  # no oracle section: one line, not a pass
    res = runner.invoke(app, ["truth", str(tmp_path / "run"), "--oracle"])
    assert res.exit_code == 2 and "no oracle labels" in res.output, res.output
