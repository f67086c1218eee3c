"""Turn recorded findings into the typed `Aggregate` record (aggregate.json; the schema is in agent/aggregate.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from latentdiff.agent.aggregate import (  # noqa: F401 - the schema stays importable from here
    AGGREGATE_VERSION,
    Aggregate,
    Comparison,
    ConfidenceView,
    Failure,
    LatentPoint,
    RefinementRow,
    compare,
)
from latentdiff.agent.confidence import is_low_confidence
from latentdiff.agent.replicates import replicate_groups
from latentdiff.agent.state import read_findings
from latentdiff.config import RunConfig
from latentdiff.io import atomic_write_json
from latentdiff.records import Finding
from latentdiff.rundir import RunDir


def refinement_table(findings: list[Finding]) -> list[RefinementRow]:
    """Per category of the kept label: refined latents and their mean verification before and after."""
    by_latent = {f.ref.key: f for f in findings if f.label is not None}
    rows = []
    for cat in sorted({f.label.category for f in by_latent.values()}):  # type: ignore[union-attr]
        mine = [f for f in by_latent.values() if f.label.category == cat]  # type: ignore[union-attr]
        refined = [f for f in mine if f.refined]
        first = [f.label_attempts[0].verification for f in refined if f.label_attempts[0].verification is not None]
        kept = [f.verification for f in refined if f.verification is not None]
        changed = sum(f.label_attempts[0].label != f.label for f in refined)
        rows.append(RefinementRow(category=cat, n_labelled=len(mine), n_refined=len(refined), n_changed=changed,
                                  verification_before=sum(first) / len(first) if first else None,
                                  verification_after=sum(kept) / len(kept) if kept else None))
    return rows






def is_scaffold(f: Finding, cfg: RunConfig) -> bool:
    """More than `sampling.scaffold_share` of the latent's activation mass falls on special tokens."""
    return f.scaffold_share is not None and f.scaffold_share > cfg.sampling.scaffold_share


def _points(cfg: RunConfig, findings: list[Finding], pair: str, side: str,
            crosscoder: set[str] | None = None, confident: bool = False) -> list[LatentPoint]:
    """The labelled latents of one pair's side (only those with a confident label when `confident`)."""
    return [LatentPoint(key=f.ref.key, category=f.label.category, verification=f.verification,
                        scaffold=is_scaffold(f, cfg))
            for f in findings if f.pair == pair and f.side == side and f.label is not None
            and (crosscoder is None or f.ref.crosscoder in crosscoder)
            and not (confident and is_low_confidence(f, cfg.report.low_confidence))]


def comparisons_for(cfg: RunConfig, findings: list[Finding], categories: list[str],
                    crosscoder: set[str] | None = None, confident: bool | None = None) -> dict[str, Any]:
    """Every comparison of one set of findings (of one replicate's crosscoders when `crosscoder` names them).

    `confident`: leave low-confidence labels out (None = as `report.exclude_low_confidence` says).
    """
    r = cfg.report
    conf = r.exclude_low_confidence if confident is None else confident

    def pts(pair: str, side: str) -> list[LatentPoint]:
        return _points(cfg, findings, pair, side, crosscoder, conf)

    opts = {"alpha": r.alpha, "correction": r.correction, "min_set": r.min_set_size,
            "exclude_scaffold": r.exclude_scaffold}
    out: dict[str, Any] = {"headline": None, "headline_alt": None, "comparisons": [], "control": []}
    if cfg.headline is not None:
        a, b = cfg.headline
        pa, pb = pts(a, "finetuned"), pts(b, "finetuned")
        shared = {p.key for p in pa} & {p.key for p in pb}
        excl = ([p for p in pa if p.key not in shared], [p for p in pb if p.key not in shared])
        defs = {"exclusive": (excl, f"latents specific to {a} and not {b} vs latents specific to {b} and not {a} "
                              f"(each relative to the base; {len(shared)} specific to both left out)"),
                "overlapping": ((pa, pb), f"latents specific to {a} vs latents specific to {b} (each relative to "
                                          f"the base; the paper's sets: {len(shared)} latents are in both)")}
        chosen = "exclusive" if cfg.headline_exclusive else "overlapping"
        order = [chosen] + ([d for d in defs if d != chosen] if cfg.design == "joint" else [])
        for kind, name in zip(("headline", "headline_alt"), order):
            (sa, sb), text = defs[name]
            out[kind] = compare(a, sa, b, sb, categories, text, kind=kind, sets=name, **opts)
    pairs = [m.name for m in cfg.models if m.role != "base"]
    for p in pairs:
        ref = pts(p, "shared")
        out["comparisons"].append(compare(
            p, pts(p, "finetuned"), "reference", ref, categories,
            f"latents specific to {p} (vs base) vs the reference sample of shared latents. A specific latent marks "
            f"text on which {p}'s activations differ from the base's, which includes text of concepts it was never "
            "trained on (measured on the organisms, docs/organisms.md), so this is where it changed, not a list of "
            "what it learned; the headline, a contrast of two fine-tunes, cancels what both changed",
            kind="vs_reference", sets="reference", pair=p, **opts))
        out["comparisons"].append(compare(
            "base", pts(p, "base"), "reference", ref, categories,
            f"latents specific to base (vs {p}) vs the reference sample of shared latents",
            kind="vs_reference", sets="reference", pair=p, **opts))
    control = cfg.control.name if cfg.control else None
    if control is not None:
        ctrl = pts(control, "finetuned")
        ctrl_keys = {p.key for p in ctrl}
        for m in cfg.finetunes:
            only = [x for x in pts(m.name, "finetuned") if x.key not in ctrl_keys]
            out["control"].append(compare(
                m.name, only, control, ctrl, categories,
                f"latents specific to {m.name} and not to {control} vs latents specific to {control} (each "
                f"relative to the base): the difference of their log share ratios against a common reference",
                kind="control", sets="control", pair=m.name, **opts))
    return out


def build_aggregate(cfg: RunConfig, findings: list[Finding], categories: list[str],
                    skipped: list[str] | None = None, stop_reason: str | None = None) -> Aggregate:
    """Every comparison of the primary crosscoder, replicate agreement across the others, and totals."""
    from latentdiff.agent.replicates import replicate_rows

    groups = replicate_groups({f.ref.crosscoder for f in findings})
    reps = {rep or "primary": comparisons_for(cfg, findings, categories, names) for rep, names in groups.items()}
    main = next(iter(reps.values())) if reps else comparisons_for(cfg, findings, categories)
    by_latent: dict[str, Finding] = {f.ref.key: f for f in findings}
    labelled = [f for f in by_latent.values() if f.label is not None]
    verification: dict[str, list[float]] = {}
    for f in labelled:
        if f.verification is not None:
            verification.setdefault(f.label.category, []).append(f.verification)  # type: ignore[union-attr]
    judges = sorted({f.label.judge for f in labelled if f.label and f.label.judge})
    r = cfg.report
    return Aggregate(
        judge=", ".join(judges) or cfg.judge.spec, categories=categories, correction=r.correction, alpha=r.alpha,
        min_set_size=r.min_set_size, **main, replicates=replicate_rows(reps) if len(reps) > 1 else [],
        n_replicates=max(len(reps), 1), scaffold=sorted({f.ref.key for f in labelled if is_scaffold(f, cfg)}),
        n_latents=len(by_latent), n_labelled=len(labelled),
        failures=[Failure(key=k, reason=f.failure or "unknown") for k, f in by_latent.items() if f.label is None],
        skipped=skipped or [], stop_reason=stop_reason,
        verification={c: sum(v) / len(v) for c, v in verification.items()},
        refinement=refinement_table(findings),
        confidence=confidence_view(cfg, findings, categories, next(iter(groups.values())) if groups else None),
    )


def confidence_view(cfg: RunConfig, findings: list[Finding], categories: list[str],
                    crosscoder: set[str] | None) -> ConfidenceView:
    """The headline and vs-reference comparisons with low-confidence labels treated the other way round."""
    r = cfg.report
    low = sorted({f.ref.key for f in findings if (crosscoder is None or f.ref.crosscoder in crosscoder)
                  and is_low_confidence(f, r.low_confidence)})
    other = comparisons_for(cfg, findings, categories, crosscoder, confident=not r.exclude_low_confidence)
    comps = [c for c in (other["headline"], other["headline_alt"], *other["comparisons"]) if c is not None]
    return ConfidenceView(threshold=r.low_confidence, low_confidence=low, excluded=not r.exclude_low_confidence,
                          comparisons=comps)


def write_aggregate(cfg: RunConfig, run_dir: Path, taxonomy: Any, skipped: list[str] | None = None,
                    stop_reason: str | None = None) -> Path:
    """Build the aggregate from the run's findings and write aggregate.json."""
    categories = [c.name for c in taxonomy.categories]
    agg = build_aggregate(cfg, read_findings(run_dir), categories, skipped, stop_reason)
    path = RunDir.of(run_dir).aggregate
    atomic_write_json(path, agg.model_dump(mode="json"))
    return path
