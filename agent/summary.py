"""Turn recorded findings into the typed `Aggregate` record (aggregate.json)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from latentdiff.agent.aggregate import Comparison, LatentPoint, NetComparison, compare, net_of_control
from latentdiff.agent.state import read_findings
from latentdiff.config import RunConfig
from latentdiff.io import atomic_write_json
from latentdiff.records import Finding

AGGREGATE_VERSION = 1


class Failure(BaseModel):
    """A latent that could not be labelled."""

    key: str = Field(description="Latent key.")
    reason: str = Field(description="Why.")


class RefinementRow(BaseModel):
    """How many labels of a category needed refinement, and what it did to their verification."""

    category: str = Field(description="Category of the kept label.")
    n_labelled: int = Field(description="Labelled latents in this category.")
    n_refined: int = Field(description="Of those, latents that went through at least one refinement round.")
    n_changed: int = Field(description="Refined latents whose kept label is not the first one.")
    verification_before: float | None = Field(description="Mean detection score of the first labels (refined).")
    verification_after: float | None = Field(description="Mean detection score of the kept labels (refined).")


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


class Aggregate(BaseModel):
    """Per-category shifts of a run (aggregate.json)."""

    version: int = Field(default=AGGREGATE_VERSION, description="Schema version.")
    judge: str = Field(description="Judge spec that produced the labels.")
    categories: list[str] = Field(description="Taxonomy categories, in order.")
    headline: Comparison | None = Field(description="The configured A-vs-B comparison, if any.")
    comparisons: list[Comparison] = Field(description="Each fine-tune (and control) vs the base.")
    net_of_control: list[NetComparison] = Field(
        default_factory=list, description="Each fine-tune's shifts vs base minus the control's own shifts."
    )
    n_latents: int = Field(description="Latents with findings.")
    n_labelled: int = Field(description="Latents with a valid label.")
    failures: list[Failure] = Field(description="Latents whose labelling failed, with reasons.")
    skipped: list[str] = Field(default_factory=list, description="Candidates left unlabelled by budget.")
    stop_reason: str | None = Field(
        default=None, description="Why labelling stopped (budget, ci_width, all candidates labelled)."
    )
    verification: dict[str, float] = Field(description="Mean detection score per category.")
    refinement: list[RefinementRow] = Field(
        default_factory=list, description="Per category: labels that needed refinement and their verification."
    )


def _points(findings: list[Finding], pair: str, side: str) -> list[LatentPoint]:
    return [LatentPoint(key=f.ref.key, category=f.label.category, freq=f.freq, doc_ids=f.doc_ids,
                        verification=f.verification)
            for f in findings if f.pair == pair and f.side == side and f.label is not None]


def build_aggregate(cfg: RunConfig, findings: list[Finding], categories: list[str],
                    skipped: list[str] | None = None, stop_reason: str | None = None) -> Aggregate:
    """Comparisons per pair (fine-tune-specific vs base-specific) and the headline."""
    pairs = [m.name for m in cfg.models if m.role != "base"]
    boot = cfg.report.bootstrap
    comps = [compare(p, _points(findings, p, "finetuned"), "base", _points(findings, p, "base"), categories,
                     f"latents specific to {p} vs latents specific to base (crosscoder {p}-vs-base)",
                     n_boot=boot, seed=cfg.report.seed) for p in pairs]
    headline = None
    if cfg.headline is not None:
        a, b = cfg.headline
        pa, pb = _points(findings, a, "finetuned"), _points(findings, b, "finetuned")
        how = "each relative to the base"
        if cfg.headline_exclusive and cfg.design == "joint":
            shared = {p.key for p in pa} & {p.key for p in pb}
            pa, pb = [p for p in pa if p.key not in shared], [p for p in pb if p.key not in shared]
            how += f"; {len(shared)} latents specific to both were left out"
        headline = compare(a, pa, b, pb, categories,
                           f"category shares of {a}-specific latents relative to {b}-specific latents ({how})",
                           n_boot=boot, seed=cfg.report.seed)
    net: list[NetComparison] = []
    control = cfg.control.name if cfg.control else None
    if control is not None:
        ctrl = next(c for c in comps if c.a == control)
        ctrl_keys = {p.key for p in _points(findings, control, "finetuned")}
        for p in (m.name for m in cfg.finetunes):
            # latents specific to the fine-tune relative to both the base and the control
            only = [x for x in _points(findings, p, "finetuned") if x.key not in ctrl_keys]
            plain = compare(p, only, "base", _points(findings, p, "base"), categories,
                            f"latents specific to {p} (vs base and vs {control}) vs latents specific to base",
                            n_boot=boot, seed=cfg.report.seed)
            net.append(net_of_control(plain, ctrl))
    by_latent: dict[str, Finding] = {f.ref.key: f for f in findings}
    labelled = [f for f in by_latent.values() if f.label is not None]
    verification: dict[str, list[float]] = {}
    for f in labelled:
        if f.verification is not None:
            verification.setdefault(f.label.category, []).append(f.verification)  # type: ignore[union-attr]
    judges = sorted({f.label.judge for f in labelled if f.label and f.label.judge})
    return Aggregate(
        judge=", ".join(judges) or cfg.judge.spec, categories=categories, headline=headline,
        comparisons=comps, net_of_control=net, n_latents=len(by_latent), n_labelled=len(labelled),
        failures=[Failure(key=k, reason=f.failure or "unknown") for k, f in by_latent.items() if f.label is None],
        skipped=skipped or [], stop_reason=stop_reason,
        verification={c: sum(v) / len(v) for c, v in verification.items()},
        refinement=refinement_table(findings),
    )


def write_aggregate(cfg: RunConfig, run_dir: Path, taxonomy: Any, skipped: list[str] | None = None,
                    stop_reason: str | None = None) -> Path:
    """Build the aggregate from the run's findings and write aggregate.json."""
    categories = [c.name for c in taxonomy.categories]
    agg = build_aggregate(cfg, read_findings(run_dir), categories, skipped, stop_reason)
    path = Path(run_dir) / "aggregate.json"
    atomic_write_json(path, agg.model_dump(mode="json"))
    return path
