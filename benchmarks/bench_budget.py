"""Adaptive labelling budget and label refinement on a finished demo run (offline embedding judge).

Copies RUN (never modified) to OUT/<variant> without its activations and re-runs only label and
aggregate there:
  - full:      every candidate latent, refinement on (agent.refine_below, --refine-below);
  - adaptive:  agent.adaptive at 25 / 50 / 100% of the candidates (max_latents), ci_width set, in
               agent.adaptive_order --order, once per --seeds seed (the seed of the random order);
  - norefine:  every candidate, refinement off (what refinement changes).
Reports, against `full`: per-category difference of the headline's share difference (`diff_pp`,
percentage points), sign (`direction`) agreement, significance agreement (corrected exact test),
planted signs recovered, judge calls (saved), stop reason; and for the refined latents the mean
verification of their first label vs the kept one.

    python benchmarks/bench_budget.py runs/dev-demo /tmp/budget-demo --ci-width 40
    python benchmarks/bench_budget.py runs/dev-demo /tmp/bb --refine-below 0 --skip-norefine \
        --fractions 0.25,0.5 --order random --seeds 0,1,2,3,4

With several seeds, `by_fraction` summarises each budget over the seeds: the mean signed difference
of `diff_pp` per category against `full` (the bias, in percentage points; random draws should
average near 0), how many runs got a planted sign wrong and significant, and the mean number of
point-estimate signs (`direction`) agreeing with `full`.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shutil
import time
from pathlib import Path
from typing import Any

from latentdiff.rundir import RunDir

log = logging.getLogger("bench_budget")


def copy_run(src: Path, dst: Path) -> None:
    """The run without activations (label/aggregate do not read them)."""
    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir(parents=True)
    for item in src.iterdir():
        if item == RunDir(src).activations:
            continue
        (shutil.copytree if item.is_dir() else shutil.copy2)(item, dst / item.name)


def relabel(src: Path, dst: Path, agent: dict[str, Any], seed: int | None = None) -> dict[str, Any]:
    """Label + aggregate a copy of src with agent overrides (and global seed); timings, calls, aggregate."""
    from latentdiff import stages
    from latentdiff.config import build_config, load_config

    copy_run(src, dst)
    data = load_config(RunDir(src).config).model_dump(mode="json")
    data["run_dir"] = str(dst)
    data["agent"] |= agent
    if seed is not None:
        data["seed"] = seed
    cfg = build_config(data)
    t0 = time.perf_counter()
    stages.run_label(cfg, stages.begin(cfg, dst, "label"))
    seconds = time.perf_counter() - t0
    stages.run_aggregate(cfg, stages.begin(cfg, dst, "aggregate"))
    marker = RunDir(dst).read_marker("label") or {}
    return {"seconds": seconds, "calls": marker["judge_calls"], "labelled": marker["latents"],
            "aggregate": json.loads(RunDir(dst).aggregate.read_text())}


def headline_rows(agg: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Headline category rows by name."""
    return {c["name"]: c for c in agg["headline"]["categories"]}


def _planted_significant(agg: dict[str, Any]) -> tuple[int, int, int]:
    """(recovered, wrong, planted) headline signs among the planted ones: significant after correction in
    the planted direction (the report's rule), significant in the other direction, and how many."""
    from latentdiff.core.organisms import load_planted

    signs = load_planted().get("headline", {}).get("signs", {})
    rows = headline_rows(agg)
    planted = {k: v for k, v in signs.items() if v in ("+", "-")}
    same = [rows[k]["direction"] == v for k, v in planted.items() if rows[k]["significant"]]
    return sum(same), len(same) - sum(same), len(planted)


def planted_recovered(agg: dict[str, Any]) -> tuple[int, int]:
    """(recovered, planted) headline signs: significant after correction in the planted direction."""
    ok, _, n = _planted_significant(agg)
    return ok, n


def compare_to(full: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """Effect error (percentage points), sign and significance agreement of other's headline vs full's."""
    a, b = headline_rows(full), headline_rows(other)
    diff = {k: b[k]["diff_pp"] - a[k]["diff_pp"] for k in a}
    return {
        "mean_abs_diff_pp": sum(abs(v) for v in diff.values()) / len(diff),
        "diff_pp": diff,
        "sign_agree": sum(a[k]["direction"] == b[k]["direction"] for k in a),
        "significance_agree": sum(a[k]["significant"] == b[k]["significant"] for k in a),
        "n_categories": len(a),
    }


def wrong_significant(agg: dict[str, Any]) -> int:
    """Planted headline signs that came out significant in the other direction."""
    return _planted_significant(agg)[1]


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Over the seeds of one budget: mean signed diff_pp difference per category, wrong-and-significant runs."""
    cats = runs[0]["vs_full"]["diff_pp"]
    return {
        "n_runs": len(runs),
        "mean_diff_pp": {k: sum(r["vs_full"]["diff_pp"][k] for r in runs) / len(runs) for k in cats},
        "mean_abs_diff_pp": sum(r["vs_full"]["mean_abs_diff_pp"] for r in runs) / len(runs),
        "runs_with_wrong_significant_sign": sum(r["wrong_significant"] > 0 for r in runs),
        "mean_sign_agree": sum(r["vs_full"]["sign_agree"] for r in runs) / len(runs),
        "mean_planted_recovered": sum(r["planted"][0] for r in runs) / len(runs),
        "mean_calls": sum(r["calls"] for r in runs) / len(runs),
    }


def refinement_stats(run_dir: Path) -> dict[str, Any]:
    """Refined latents: mean verification of the first label vs the kept one."""
    from latentdiff.agent.state import read_findings

    by_key = {f.ref.key: f for f in read_findings(run_dir) if f.label is not None}
    refined = [f for f in by_key.values() if f.refined and f.label_attempts[0].verification is not None]
    before = [f.label_attempts[0].verification for f in refined]
    after = [f.verification for f in refined]
    return {"n_labelled": len(by_key), "n_refined": len(refined),
            "n_changed": sum(f.label_attempts[0].label != f.label for f in refined),
            "before": sum(before) / len(before) if before else math.nan,
            "after": sum(after) / len(after) if after else math.nan,
            "all_mean": sum(f.verification or 0 for f in by_key.values()) / max(len(by_key), 1)}


def main() -> None:
    """Run the variants and write OUT/bench_budget.json."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="A finished demo run (read only).")
    ap.add_argument("out", type=Path, help="Scratch directory for the copies.")
    ap.add_argument("--fractions", default="0.25,0.5,1.0", help="Adaptive budgets as fractions of the candidates.")
    ap.add_argument("--ci-width", type=float, default=40.0,
                    help="agent.ci_width for the adaptive runs (widest share-difference CI, percentage points).")
    ap.add_argument("--skip-norefine", action="store_true", help="Skip the refinement-off run.")
    ap.add_argument("--refine-below", type=float, default=0.7, help="agent.refine_below of the full run.")
    ap.add_argument("--reuse-full", action="store_true", help="Reuse OUT/full from an earlier run of this script.")
    ap.add_argument("--order", choices=("random", "effect"), default="random", help="agent.adaptive_order.")
    ap.add_argument("--seeds", default="0", help="Comma-separated seeds of the adaptive runs.")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    out: dict[str, Any] = {}
    full_dir = RunDir(args.out / "full")
    if args.reuse_full and full_dir.marker("label").is_file() and full_dir.aggregate.is_file():
        marker = full_dir.read_marker("label") or {}
        full = {"seconds": math.nan, "calls": marker["judge_calls"], "labelled": marker["latents"],
                "aggregate": json.loads(full_dir.aggregate.read_text())}
    else:
        full = relabel(args.run, args.out / "full", {"refine_below": args.refine_below})
    out["full"] = {k: v for k, v in full.items() if k != "aggregate"} | {
        "planted": planted_recovered(full["aggregate"]), "refinement": refinement_stats(args.out / "full")}
    n = full["labelled"]
    if not args.skip_norefine:
        base = relabel(args.run, args.out / "norefine", {"refine_below": None})
        out["norefine"] = {k: v for k, v in base.items() if k != "aggregate"} | {
            "planted": planted_recovered(base["aggregate"]),
            "vs_full": compare_to(full["aggregate"], base["aggregate"])}
    by_fraction: dict[str, Any] = {}
    for frac in (float(x) for x in args.fractions.split(",")):
        runs = []
        for seed in (int(x) for x in args.seeds.split(",")):
            res = relabel(args.run, args.out / f"adaptive-{frac:g}-s{seed}",
                          {"adaptive": True, "adaptive_order": args.order, "max_latents": max(1, math.ceil(frac * n)),
                           "ci_width": args.ci_width, "refine_below": args.refine_below}, seed=seed)
            agg = res["aggregate"]
            row = {k: v for k, v in res.items() if k != "aggregate"} | {
                "stop_reason": agg["stop_reason"], "skipped": len(agg["skipped"]),
                "calls_saved": full["calls"] - res["calls"],
                "calls_saved_pct": 100 * (1 - res["calls"] / full["calls"]),
                "planted": planted_recovered(agg), "wrong_significant": wrong_significant(agg),
                "vs_full": compare_to(full["aggregate"], agg)}
            out[f"adaptive-{frac:g}-s{seed}"] = row
            runs.append(row)
        by_fraction[f"{frac:g}"] = summarise(runs)
    out["by_fraction"] = by_fraction
    name = "bench_budget.json" if not args.reuse_full else f"bench_budget-{args.order}-{args.fractions}.json"
    (args.out / name).write_text(json.dumps(out, indent=2))
    for name, r in out.items():
        log.info("%s: %s", name, json.dumps({k: v for k, v in r.items() if k != "vs_full"}))
        if "vs_full" in r:
            log.info("   vs full: %s", json.dumps(r["vs_full"]))


if __name__ == "__main__":
    main()
