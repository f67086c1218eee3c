"""Calibration of the aggregate's test: its family-wise false-positive rate where no difference exists.

Two measurements (docs/benchmarks.md, "Calibration"):

  splits RUN_DIR   random splits of a finished run's labelled latents into two sets, each compared with
                   the aggregate's own `compare()` (test, correction, alpha and minimum size from the run's
                   config). Pools: the headline's latents (split into the headline's two set sizes) and
                   every selected latent (halves). Exchangeability holds by construction, so a calibrated
                   test marks a comparison with any significant category in <= alpha of the splits.
  null RUN_DIR...  finished runs of a true null pair (`null` vs `null2`, e.g. benchmarks/configs/null_pair.yaml):
                   every tested comparison of every replicate crosscoder is a null comparison; counts those
                   with any significant category.

    python benchmarks/bench_calibration.py splits runs/demo --n 500
    python benchmarks/bench_calibration.py null runs/null-pair
Prints one line per measurement with the family-wise rate and its 95% Wilson interval; --out writes JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from latentdiff.agent import stats
from latentdiff.agent.aggregate import compare
from latentdiff.agent.replicates import replicate_groups
from latentdiff.agent.state import read_findings
from latentdiff.agent.summary import _points, build_aggregate
from latentdiff.config import load_config
from latentdiff.rundir import RunDir


def _rate(hits: int, n: int) -> dict[str, Any]:
    lo, hi = stats.wilson(hits, n) if n else (0.0, 1.0)
    return {"hits": hits, "n": n, "rate": hits / n if n else None, "ci95": [lo, hi]}


def splits(run_dir: Path, n: int, seed: int) -> dict[str, Any]:
    """Family-wise and per-category false-positive rates over random splits of the run's latents."""
    cfg = load_config(RunDir(run_dir).config)
    findings = read_findings(run_dir)
    primary = next(iter(replicate_groups({f.ref.crosscoder for f in findings}).values()))
    findings = [f for f in findings if f.ref.crosscoder in primary]
    from latentdiff.agent.judges.taxonomy import load_taxonomy

    cats = [c.name for c in load_taxonomy(cfg.judge.taxonomy).categories]
    r = cfg.report
    opts = {"alpha": r.alpha, "correction": r.correction, "min_set": r.min_set_size,
            "exclude_scaffold": r.exclude_scaffold}
    pools: dict[str, tuple[list[Any], int]] = {}
    agg = build_aggregate(cfg, findings, cats)
    if agg.headline is not None:
        a, b = cfg.headline  # type: ignore[misc]
        pa = {p.key: p for p in _points(cfg, findings, a, "finetuned")}
        pb = {p.key: p for p in _points(cfg, findings, b, "finetuned")}
        keep = sorted(pa.keys() ^ pb.keys()) if agg.headline.sets == "exclusive" else [*pa, *pb]
        pool = list({k: pa.get(k) or pb[k] for k in keep}.values())
        pool = [p for p in pool if not (p.scaffold and r.exclude_scaffold)]
        pools["headline"] = (pool, agg.headline.n_a)
    selected = {}
    for m in cfg.models:
        for side in ("finetuned", "base"):
            for p in _points(cfg, findings, m.name, side):
                selected.setdefault(p.key, p)
    everything = [p for p in selected.values() if not (p.scaffold and r.exclude_scaffold)]
    pools["selected"] = (everything, len(everything) // 2)
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {"run": str(run_dir), "splits": n, "correction": r.correction, "alpha": r.alpha}
    for name, (pool, n_a) in pools.items():
        hits, per_cat = 0, dict.fromkeys(cats, 0)
        for _ in range(n):
            order = rng.permutation(len(pool))
            sa = [pool[i] for i in order[:n_a]]
            sb = [pool[i] for i in order[n_a:]]
            comp = compare("A", sa, "B", sb, cats, "random split", **opts)
            sig = [c.name for c in comp.categories if c.significant]
            hits += bool(sig)
            for c in sig:
                per_cat[c] += 1
        out[name] = {"pool": len(pool), "sizes": [n_a, len(pool) - n_a], "family_wise": _rate(hits, n),
                     "per_category": {c: v / n for c, v in per_cat.items()}}
    return out


def null_runs(run_dirs: list[Path]) -> dict[str, Any]:
    """Every tested comparison of every replicate of null-pair runs: how many show any significant category."""
    rows, hits, tested = [], 0, 0
    for run_dir in run_dirs:
        cfg = load_config(RunDir(run_dir).config)
        findings = read_findings(run_dir)
        from latentdiff.agent.judges.taxonomy import load_taxonomy
        from latentdiff.agent.summary import comparisons_for

        cats = [c.name for c in load_taxonomy(cfg.judge.taxonomy).categories]
        for rep, ccs in replicate_groups({f.ref.crosscoder for f in findings}).items():
            cc = rep or "primary"
            comps = comparisons_for(cfg, findings, cats, ccs)
            for c in [comps["headline"], comps["headline_alt"], *comps["comparisons"], *comps["control"]]:
                if c is None:
                    continue
                sig = [x.name for x in c.categories if x.significant]
                rows.append({"run": str(run_dir), "crosscoder": cc, "comparison": f"{c.a} vs {c.b} ({c.sets})",
                             "n_a": c.n_a, "n_b": c.n_b, "status": c.status, "significant": sig})
                if c.tested:
                    tested += 1
                    hits += bool(sig)
    return {"comparisons": rows, "family_wise": _rate(hits, tested)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    sp = sub.add_parser("splits")
    sp.add_argument("run_dir", type=Path)
    sp.add_argument("--n", type=int, default=500)
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--out", type=Path)
    nl = sub.add_parser("null")
    nl.add_argument("run_dirs", type=Path, nargs="+")
    nl.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.what == "splits":
        res = splits(args.run_dir, args.n, args.seed)
        for name in ("headline", "selected"):
            if name in res:
                fw = res[name]["family_wise"]
                print(f"{name}: pool {res[name]['pool']} split {res[name]['sizes']}: family-wise false-positive "
                      f"rate {fw['hits']}/{fw['n']} = {fw['rate']:.3f} (95% CI {fw['ci95'][0]:.3f}-"
                      f"{fw['ci95'][1]:.3f}); per category "
                      + ", ".join(f"{c} {v:.3f}" for c, v in res[name]["per_category"].items()))
    else:
        res = null_runs(args.run_dirs)
        for row in res["comparisons"]:
            print(f"{row['crosscoder']}: {row['comparison']}: {row['n_a']} vs {row['n_b']} latents, {row['status']}, "
                  f"significant {row['significant'] or 'none'}")
        fw = res["family_wise"]
        rate = "n/a" if fw["rate"] is None else f"{fw['rate']:.3f}"
        print(f"null pair: {fw['hits']} of {fw['n']} tested comparisons with any significant category ({rate}; "
              f"95% CI {fw['ci95'][0]:.3f}-{fw['ci95'][1]:.3f})")
    if args.out:
        args.out.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
