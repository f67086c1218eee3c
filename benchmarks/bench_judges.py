"""Offline judge comparison: embedding-judge variants on a dev set built from an organism run, and
the held-out set (benchmarks/judge_eval/heldout.jsonl) for the final numbers only.

    .venv/bin/python -m benchmarks.bench_judges --run /tmp/runs/demo0            # dev: every variant
    .venv/bin/python -m benchmarks.bench_judges --run /tmp/runs/demo0 --heldout  # + held-out: old vs new

The dev set (written to a temp file, in `latentdiff judges eval`'s JSONL format) holds every latent
of the run's examples with its oracle label (majority stream of its top examples; agent/oracle.py)
and the agent's round-0 view: top fold A, quantile fold A, half the negatives. The stream is never
written into the examples. Per variant: accuracy per oracle category, overall, and the ROC AUC of
the label's confidence for separating right from wrong labels.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
HELDOUT = HERE / "judge_eval" / "heldout.jsonl"
TAXONOMY_V0 = HERE / "judge_eval" / "taxonomy_v0.yaml"  # the taxonomy before issue 14 (old judge only)


def build_dev(run_dir: Path, out: Path) -> int:
    """Write the dev set of `run_dir` (an organism run) to `out`; returns the number of latents."""
    from latentdiff.agent.judges.taxonomy import load_taxonomy
    from latentdiff.agent.oracle import oracle_labels
    from latentdiff.core.examples import read_examples
    from latentdiff.rundir import RunDir

    names = load_taxonomy().names
    lines = []
    for path in RunDir(run_dir).example_files():
        cc = path.name.split(".")[0]
        oracle = oracle_labels(RunDir(run_dir).examples_dir, names)
        by_latent: dict[int, list] = defaultdict(list)
        for ex in read_examples(path):
            by_latent[ex.latent].append(ex)
        for latent, exs in sorted(by_latent.items()):
            o = oracle.get(f"{cc}:{latent}")
            if o is None:
                continue
            top = [e for e in exs if e.kind == "top"][0::2]
            quant = sorted((e for e in exs if e.kind == "quantile"), key=lambda e: e.quantile or 0)[0::2]
            neg = [e for e in exs if e.kind == "negative"]
            neg = neg[: len(neg) // 2]
            lines.append({"latent": f"{cc}:{latent}", "category": o.category, "examples": [
                {"text": e.marked_text(), "tokens": e.tokens, "activations": e.activations, "kind": e.kind}
                for e in top + quant + neg]})
    out.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines), encoding="utf-8")
    return len(lines)


def roc_auc(scores: list[float], positive: list[bool]) -> float | None:
    """P(score of a random positive > score of a random negative), ties count half."""
    pos = [s for s, p in zip(scores, positive, strict=True) if p]
    neg = [s for s, p in zip(scores, positive, strict=True) if not p]
    if not pos or not neg:
        return None
    wins = sum((a > b) + 0.5 * (a == b) for a in pos for b in neg)
    return wins / (len(pos) * len(neg))


def score(items, judge) -> dict:  # type: ignore[no-untyped-def]
    """Label every item; per-category accuracy, overall accuracy, confidence AUC, latency."""
    async def run() -> list:
        return [await judge.label(req) for req, _ in items]

    t0 = time.perf_counter()
    labels = asyncio.run(run())
    dt = (time.perf_counter() - t0) / max(len(items), 1)
    per: dict[str, list[bool]] = defaultdict(list)
    right, conf = [], []
    for (_, gold), lab in zip(items, labels, strict=True):
        ok = lab.category == gold
        per[gold].append(ok)
        right.append(ok)
        conf.append(lab.confidence)
    return {"accuracy": sum(right) / len(right), "n": len(right),
            "per_category": {c: (sum(v) / len(v), len(v)) for c, v in per.items()},
            "auc": roc_auc(conf, right), "latency_s": dt,
            "predicted": {c: sum(lab.category == c for lab in labels) for c in per}}


def variants() -> dict[str, tuple[Path | None, dict]]:
    """Named (taxonomy file or None for the bundled one, EmbeddingJudge options), in the order tried."""
    from latentdiff.agent.judges.embedding_judge import DEFAULT_OPTIONS, LEGACY_OPTIONS

    L = LEGACY_OPTIONS
    V3 = {**L, "prototypes": True, "span_weight": 0.0}
    V7 = {**V3, "mode": "vote"}
    V30 = {**V7, "strip_special": True, "min_share": 0.3}
    return {
        "v0 old: old taxonomy, mean vector": (TAXONOMY_V0, dict(L)),
        "v1 new taxonomy text, mean vector": (None, dict(L)),
        "v2 v1 + prototypes": (None, {**L, "prototypes": True}),
        "v3 v2, no span text": (None, {**L, "prototypes": True, "span_weight": 0.0}),
        "v4 v2, avg of per-example scores": (None, {**L, "prototypes": True, "mode": "avg"}),
        "v5 v2, per-example vote": (None, {**L, "prototypes": True, "mode": "vote"}),
        "v6 v3, avg of per-example scores": (None, {**V3, "mode": "avg"}),
        "v7 v3, per-example vote": (None, {**V3, "mode": "vote"}),
        "v8 v3, no negatives": (None, {**V3, "neg_weight": 0.0}),
        "v9 v3, negatives x1.0": (None, {**V3, "neg_weight": 1.0}),
        "v10 v3, quantile weight 1.0": (None, {**V3, "quantile_weight": 1.0}),
        "v11 v3, quantile weight 0": (None, {**V3, "quantile_weight": 0.0}),
        "v12 v3, description weight 0.5": (None, {**V3, "desc_weight": 0.5}),
        "v13 v3, description weight 0": (None, {**V3, "desc_weight": 0.0}),
        "v14 v3, other margin 0.02": (None, {**V3, "other_margin": 0.02}),
        "v15 v3, other margin 0.05": (None, {**V3, "other_margin": 0.05}),
        "v16 v3, other margin 0.1": (None, {**V3, "other_margin": 0.1}),
        "v17 v3 without prototypes": (None, {**V3, "prototypes": False}),
        "v18 v3 with old taxonomy": (TAXONOMY_V0, dict(V3)),
        "v19 v7, quantile weight 0": (None, {**V7, "quantile_weight": 0.0}),
        "v20 v7, quantile weight 0.25": (None, {**V7, "quantile_weight": 0.25}),
        "v21 v7, negatives x0.25": (None, {**V7, "neg_weight": 0.25}),
        "v22 v7, negatives x1.0": (None, {**V7, "neg_weight": 1.0}),
        "v23 v7, other below 0.4 vote share": (None, {**V7, "min_share": 0.4}),
        "v24 v7, other below 0.5 vote share": (None, {**V7, "min_share": 0.5}),
        "v25 v7, other below 0.6 vote share": (None, {**V7, "min_share": 0.6}),
        "v26 v7, other margin 0.1": (None, {**V7, "other_margin": 0.1}),
        "v27 v7 without prototypes": (None, {**V7, "prototypes": False}),
        "v28 v7 with old taxonomy": (TAXONOMY_V0, dict(V7)),
        "v29 v7, chat-template tokens stripped": (None, {**V7, "strip_special": True}),
        "v30 v29, other below 0.3 vote share": (None, {**V7, "strip_special": True, "min_share": 0.3}),
        "v31 v29, other below 0.35 vote share": (None, {**V7, "strip_special": True, "min_share": 0.35}),
        "v32 v29, negatives x0.25": (None, {**V7, "strip_special": True, "neg_weight": 0.25}),
        "v33 v30, quantile weight 0.25": (None, {**V30, "quantile_weight": 0.25}),
        "v34 v30, quantile weight 1.0": (None, {**V30, "quantile_weight": 1.0}),
        "v35 v30, negatives x1.0": (None, {**V30, "neg_weight": 1.0}),
        "v36 v30, marked-span text x0.5": (None, {**V30, "span_weight": 0.5}),
        "v37 v30, scores centred on the negatives' mean": (None, {**V30, "center": True}),
        "v38 v37, no negative vote subtraction": (None, {**V30, "center": True, "neg_weight": 0.0}),
        "v39 v37, other below 0.4 vote share": (None, {**V30, "center": True, "min_share": 0.4}),
        "v40 v37, other below 0.2 vote share": (None, {**V30, "center": True, "min_share": 0.2}),
        "v41 v37, quantile weight 1.0": (None, {**V30, "center": True, "quantile_weight": 1.0}),
        "v42 v30, 4 tokens each side of the peak instead of the window": (None, {**V30, "local": 4}),
        "v43 v30, 8 tokens each side of the peak instead of the window": (None, {**V30, "local": 8}),
        "v44 v30, 12 tokens each side of the peak instead of the window": (None, {**V30, "local": 12}),
        "v45 v30 + 8 tokens each side of the peak, weight 1": (None, {**V30, "local": 8, "local_weight": 1.0}),
        "v46 v30 + 4 tokens each side of the peak, weight 1": (None, {**V30, "local": 4, "local_weight": 1.0}),
        "new default": (None, dict(DEFAULT_OPTIONS)),
    }


def main(argv: list[str] | None = None) -> None:
    from latentdiff.agent.judges.embedding_judge import EmbeddingJudge
    from latentdiff.agent.judges.evaluate import read_eval_file
    from latentdiff.agent.judges.taxonomy import load_taxonomy

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, default=Path("/tmp/runs/demo0"), help="organism run dir (dev set)")
    ap.add_argument("--heldout", action="store_true", help="also score old vs new on the held-out set")
    ap.add_argument("--only", default=None, help="substring of the variant names to run")
    ap.add_argument("--cache", type=Path, default=None, help="pickle of embeddings reused across runs")
    ap.add_argument("--json", type=Path, default=None, help="write all numbers here")
    args = ap.parse_args(argv)

    judge = EmbeddingJudge("embedding")  # one instance: its embedding cache is shared by the variants
    if args.cache and args.cache.is_file():
        import pickle

        judge._vectors = pickle.loads(args.cache.read_bytes())
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        dev = Path(tmp) / "dev.jsonl"
        n = build_dev(args.run, dev)
        print(f"dev set: {n} latents from {args.run}")
        cats = load_taxonomy().names
        print("| variant | " + " | ".join(cats) + " | all | conf AUC | s/latent |")
        print("|---" * (len(cats) + 4) + "|")
        for name, (tax, opts) in variants().items():
            if args.only and args.only not in name:
                continue
            items = read_eval_file(dev, load_taxonomy(tax))
            judge.options = dict(opts)
            r = score(items, judge)
            results[f"dev: {name}"] = r
            cells = [f"{r['per_category'][c][0]:.2f}" if c in r["per_category"] else "-" for c in cats]
            auc = "-" if r["auc"] is None else f"{r['auc']:.2f}"
            print(f"| {name} | " + " | ".join(cells) + f" | {r['accuracy']:.2f} | {auc} | {r['latency_s']:.2f} |",
                  flush=True)
        print("dev n per category: " + ", ".join(f"{c} {r['per_category'].get(c, (0, 0))[1]}" for c in cats))
    if args.heldout:
        from latentdiff.agent.judges.embedding_judge import DEFAULT_OPTIONS, LEGACY_OPTIONS

        for name, tax, opts in [("old", TAXONOMY_V0, LEGACY_OPTIONS), ("new default", None, DEFAULT_OPTIONS)]:
            taxonomy = load_taxonomy(tax)
            items = read_eval_file(HELDOUT, taxonomy)
            judge.options = dict(opts)
            r = score(items, judge)
            results[f"heldout: {name}"] = r
            cells = [f"{r['per_category'][c][0]:.2f}" if c in r["per_category"] else "-" for c in taxonomy.names]
            auc = "-" if r["auc"] is None else f"{r['auc']:.2f}"
            print(f"| held-out {name} | " + " | ".join(cells) + f" | {r['accuracy']:.2f} | {auc} |", flush=True)
    if args.cache:
        import pickle

        args.cache.write_bytes(pickle.dumps(judge._vectors))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
