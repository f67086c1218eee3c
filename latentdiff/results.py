"""Typed results of the stages, read back from a run directory (small summaries, never tensors).

Each stage writes its outputs and a done-marker (see latentdiff.rundir); `read_result` turns them,
through the reader beside the stage's runner in `stages.STAGES`, into the stage's record:
`HarvestResult`, `TrainResult`, `SelectResult`, `SampleResult`, `IndexResult`, `LabelResult`, then
`Aggregate` (aggregate.json) and `Report` (report.json). Reading a stage that is not done with the
run's settings raises `StageNotDone` naming the stage to run. Nothing here imports torch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from latentdiff.config import RunConfig
from latentdiff.errors import StageNotDone
from latentdiff.rundir import RunDir

if TYPE_CHECKING:
    from latentdiff.agent.aggregate import Aggregate
    from latentdiff.agent.report.schema import Report


class CacheInfo(BaseModel):
    """One split's activation cache (from its manifest.json)."""

    path: str = Field(description="Cache directory.")
    models: list[str] = Field(description="Model names, in the cache's M axis order.")
    layer: int = Field(description="Captured block.")
    d_model: int = Field(description="Activation width.")
    dtype: str = Field(description="Storage dtype.")
    n_tokens: int = Field(description="Token rows over all shards.")
    n_contexts: int = Field(description="Contexts harvested.")
    n_shards: int = Field(description="Shard files.")
    excluded: dict[str, int] = Field(default_factory=dict, description="Excluded positions by reason.")


class HarvestResult(BaseModel):
    """The harvest stage: paired activations of every model."""

    layer: int = Field(description="Captured block.")
    mode: str = Field(description="'cache' (train split on disk) or 'stream' (train split harvested on the fly).")
    train: CacheInfo | None = Field(description="Train-split cache (None in stream mode).")
    heldout: CacheInfo = Field(description="Held-out cache (selection and examples read it).")


class CrosscoderInfo(BaseModel):
    """One trained crosscoder."""

    name: str = Field(description="Crosscoder name (e.g. 'joint').")
    path: str = Field(description="Directory with crosscoder.safetensors, cfg.json, metrics.jsonl.")
    models: list[str] = Field(description="Models it codes, base first.")
    arch: str = Field(description="'batchtopk' or 'l1'.")
    dict_size: int = Field(description="Number of latents.")
    k: int = Field(description="BatchTopK: mean active latents per token.")
    d_model: int = Field(description="Activation width.")
    final_metrics: dict[str, float] = Field(description="Last line of metrics.jsonl (step, FVU per model, L0, ...).")


class TrainResult(BaseModel):
    """The train stage: every planned crosscoder."""

    crosscoders: dict[str, CrosscoderInfo] = Field(description="Crosscoder name -> what was trained.")


class SelectResult(BaseModel):
    """The select stage: latent statistics and sides (rows: `Run.latent_stats`)."""

    path: str = Field(description="latents.parquet.")
    method: str = Field(description="Selection method.")
    sides: dict[str, dict[str, int]] = Field(description="Pair -> side -> number of latents.")


class SampleResult(BaseModel):
    """The sample stage: example windows of the selected latents (records: `Run.examples`)."""

    examples: dict[str, int] = Field(description="Crosscoder name -> examples written.")
    paths: dict[str, str] = Field(description="Crosscoder name -> examples file (gzipped JSONL).")


class IndexResult(BaseModel):
    """The index stage: examples upserted into the Chroma store."""

    examples: dict[str, int] = Field(description="Crosscoder name -> examples upserted.")
    store: str = Field(description="Chroma server URL or embedded store directory.")


class LabelResult(BaseModel):
    """The label stage: the agent's work (records: `Run.findings`)."""

    latents: int = Field(description="Latents with recorded findings.")
    failed: int = Field(description="Latents whose labelling failed.")
    judge_calls: int = Field(description="Judge calls spent (including those of earlier, interrupted runs).")
    skipped: list[str] = Field(default_factory=list, description="Candidates left unlabelled by budget.")


StageResult = HarvestResult | TrainResult | SelectResult | SampleResult | IndexResult | LabelResult


def require_done(cfg: RunConfig, run_dir: Path | RunDir, stage: str) -> dict[str, Any]:
    """The stage's done-marker info; StageNotDone (one line) if it is not done with these settings."""
    from latentdiff import stages

    stages.stage_named(stage)  # StageNotAvailable for an unknown name
    return stages.require_done(cfg, run_dir, stage)


def cache_info(path: Path) -> CacheInfo:
    """One split's activation cache, from its manifest (StageNotDone when there is none)."""
    from latentdiff.core.cache import read_manifest

    manifest = read_manifest(path)
    if manifest is None:
        raise StageNotDone(f"no activation cache in {path}: run the harvest stage (run.harvest())")
    return CacheInfo(
        path=str(path),
        models=manifest.models,
        layer=manifest.layer,
        d_model=manifest.d_model,
        dtype=manifest.dtype,
        n_tokens=manifest.n_tokens,
        n_contexts=manifest.n_contexts,
        n_shards=len(manifest.shards),
        excluded=manifest.excluded,
    )


def final_metrics(path: Path) -> dict[str, float]:
    """The last line of a metrics.jsonl ({} if empty, or absent: a crosscoder imported through init_from)."""
    if not path.is_file():
        return {}
    last = ""
    with path.open() as fh:
        for line in fh:
            last = line.strip() or last
    return json.loads(last) if last else {}


def crosscoder_info(name: str, directory: Path, spec: dict[str, Any], metrics: Path) -> CrosscoderInfo:
    """One trained crosscoder, from its saved spec (cfg.json) and its metrics file."""
    return CrosscoderInfo(
        name=name,
        path=str(directory),
        models=spec["model_names"],
        arch=spec["arch"],
        dict_size=spec["dict_size"],
        k=spec["k"],
        d_model=spec["d_model"],
        final_metrics=final_metrics(metrics),
    )


def read_result(cfg: RunConfig, run_dir: Path | RunDir, stage: str) -> StageResult | Aggregate | Report:
    """The typed result of a done stage, from the reader beside its runner in `STAGES` (StageNotDone
    otherwise; StageNotAvailable for an unknown name)."""
    from latentdiff import stages

    spec = stages.stage_named(stage)
    info = stages.require_done(cfg, run_dir, stage)
    return spec.read(cfg, RunDir.of(run_dir), info)
