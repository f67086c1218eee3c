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
    verification: dict[str, float] = Field(description="Mean detection score per category.")


def _points(findings: list[Finding], pair: str, side: str) -> list[LatentPoint]:
    return [LatentPoint(key=f.ref.key, category=f.label.category, freq=f.freq, doc_ids=f.doc_ids,
                        verification=f.verification)
            for f in findings if f.pair == pair and f.side == side and f.label is not None]


def build_aggregate(cfg: RunConfig, findings: list[Finding], categories: list[str],
                    skipped: list[str] | None = None) -> Aggregate:
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
        skipped=skipped or [], verification={c: sum(v) / len(v) for c, v in verification.items()},
    )


def write_aggregate(cfg: RunConfig, run_dir: Path, taxonomy: Any, skipped: list[str] | None = None) -> Path:
    """Build the aggregate from the run's findings and write aggregate.json."""
    categories = [c.name for c in taxonomy.categories]
    agg = build_aggregate(cfg, read_findings(run_dir), categories, skipped)
    path = Path(run_dir) / "aggregate.json"
    atomic_write_json(path, agg.model_dump(mode="json"))
    return path
