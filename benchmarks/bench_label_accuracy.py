"""Judge vs oracle per crosscoder seed on a finished organism run (docs/benchmarks.md, issue 14).

    python -m benchmarks.bench_label_accuracy RUN_DIR

For each replicate crosscoder: the share of the headline models' specific latents (and of all
labelled latents) whose label equals its oracle label (majority stream of its top examples,
agent/oracle.py), and the ROC AUC of the calibrated confidence (agent/confidence.py) for telling
right labels from wrong ones.
"""

from __future__ import annotations

import sys
from pathlib import Path


def _auc(scores: list[float], right: list[bool]) -> float | None:
    """ROC AUC by the Mann-Whitney statistic (ties count one half)."""
    pos = [s for s, r in zip(scores, right) if r]
    neg = [s for s, r in zip(scores, right) if not r]
    if not pos or not neg:
        return None
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def main(run: Path) -> None:
    """Print one line per crosscoder seed."""
    from latentdiff.agent.confidence import calibrated_confidence
    from latentdiff.agent.judges.taxonomy import load_taxonomy
    from latentdiff.agent.oracle import oracle_labels
    from latentdiff.agent.replicates import replicate_groups
    from latentdiff.agent.state import read_findings
    from latentdiff.config import load_config
    from latentdiff.rundir import RunDir

    cfg = load_config(RunDir(run).config)
    cats = [c.name for c in load_taxonomy(cfg.judge.taxonomy).categories]
    oracle = oracle_labels(RunDir(run).examples_dir, cats)
    findings = read_findings(run)
    for seed, group in replicate_groups({f.ref.crosscoder for f in findings}).items():
        mine = [f for f in findings if f.ref.crosscoder in group and f.label is not None and f.ref.key in oracle]
        seen = {}
        for f in mine:
            seen.setdefault(f.ref.key, f)  # a latent has one label whatever pair/side rows it has
        head = {f.ref.key for f in mine if f.side == "finetuned" and cfg.headline and f.pair in cfg.headline}
        right = {k: seen[k].label.category == oracle[k].category for k in seen}  # type: ignore[union-attr]
        auc = _auc([calibrated_confidence(seen[k]) or 0.0 for k in seen], [right[k] for k in seen])
        h = sum(right[k] for k in head) / len(head) if head else float("nan")
        a = sum(right.values()) / len(right) if right else float("nan")
        print(f"seed {seed or 'primary'} ({', '.join(sorted(group))}): headline latents {len(head)} agree {h:.3f}; "
              f"all {len(right)} agree {a:.3f}; confidence AUC {auc if auc is None else round(auc, 3)}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
