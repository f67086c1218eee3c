"""What every stage shares: the `Stage` record, the markers (begin / mark_done / is_done), the crosscoder
plan, the checks of new settings and the experiment logger."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from latentdiff.config import RunConfig
from latentdiff.errors import ConfigError, StageNotAvailable, StageNotDone
from latentdiff.rundir import RunDir

log = logging.getLogger(__name__)


RunPath = Path | RunDir  # a run directory given as a path or as a (possibly staged) RunDir


@dataclass(frozen=True)
class Stage:
    """One stage of the pipeline."""

    name: str
    sections: tuple[str, ...]  # the config sections its results depend on (their hash is in its marker)
    outputs: tuple[str, ...]  # RunDir top-level entries it writes (rebuilt in staging, swapped in)
    run: Callable[[RunConfig, RunDir, bool], None]  # runner(cfg, run_dir, show_progress); writes the marker
    read: Callable[[RunConfig, RunDir, dict[str, Any]], Any]  # reader(cfg, run_dir, marker) -> typed result
    distributed: bool = False  # runs on every torchrun rank (else rank 0 alone)
    checks: tuple[Callable[[RunConfig], None], ...] = ()  # validators of its settings, run before anything
    after: tuple[str, ...] | None = None  # stages that must be done first (None: the one before it in STAGES)


def _table() -> tuple[tuple[Stage, ...], tuple[str, ...]]:
    """The package's STAGES and STAGE_NAMES, read when used (a test may extend them)."""
    from latentdiff import stages

    return stages.STAGES, stages.STAGE_NAMES


def stage_named(name: str) -> Stage:
    """The stage called `name` (StageNotAvailable, one line, for an unknown name)."""
    table = _table()[0]
    for stage in table:
        if stage.name == name:
            return stage
    raise StageNotAvailable(f"unknown stage {name!r}; stages: {', '.join(s.name for s in table)}")


def needs(name: str) -> tuple[str, ...]:
    """The stages that must be done before `name` runs alone (its `after`, else the stage before it)."""
    spec = stage_named(name)
    if spec.after is not None:
        return spec.after
    names = _table()[1]
    i = names.index(name)
    return (names[i - 1],) if i > 0 else ()


def stage_hash(cfg: RunConfig, stage: str) -> str:
    """Hash of the config sections a stage depends on."""
    return cfg.section_hash(*stage_named(stage).sections)


def is_done(cfg: RunConfig, run_dir: RunPath, stage: str) -> bool:
    """True if the stage's marker matches the current settings."""
    return RunDir.of(run_dir).marker_hash(stage) == stage_hash(cfg, stage)


def require_done(cfg: RunConfig, run_dir: RunPath, stage: str) -> dict[str, Any]:
    """The stage's done-marker info; StageNotDone (one line) if it is not done with these settings."""
    rd = RunDir.of(run_dir)
    if not is_done(cfg, rd, stage):
        raise StageNotDone(
            f"stage '{stage}' is not done with these settings in {rd.root}: "
            f"run it first (run.{stage}(), or `latentdiff {stage} CONFIG`)"
        )
    return rd.read_marker(stage) or {}


def validate(cfg: RunConfig, names: list[str]) -> None:
    """Check the settings of the stages about to run (judge spec, taxonomy, model paths, devices) before
    anything in the run directory is touched; one line (a LatentDiffError) naming the problem."""
    seen: set[Callable[[RunConfig], None]] = set()
    for name in names:
        for check in stage_named(name).checks:
            if check not in seen:
                seen.add(check)
                check(cfg)


def begin(cfg: RunConfig, run_dir: RunPath, stage: str, fresh: bool = False) -> RunDir:
    """Before (re)computing a stage; returns the RunDir its runner writes through.

    Same settings as a begun, unfinished run: resume from its partial outputs (in place or staged, as it
    began). Changed settings (or `fresh`, to recompute with the same ones) while earlier outputs exist:
    the outputs are built in the stage's staging dir and swapped in by `mark_done`, so the old ones
    stay whole until the new ones are complete. Rank 0 decides under torchrun; every rank follows.
    """
    from latentdiff.core import distributed as dist

    rd = RunDir.of(run_dir)
    spec = stage_named(stage)
    dist.init_from_env()  # under torchrun: join the process group (no-op in a single process)
    h = stage_hash(cfg, stage)
    if dist.is_main():
        started = rd.read_started(stage)
        if fresh or started is None or started.get("hash") != h:
            earlier = started is not None or rd.read_marker(stage) is not None
            staged = bool(spec.outputs) and (fresh or earlier) and rd.exists(spec.outputs)
            if earlier:
                log.info("stage %s: %s, recomputing from scratch%s", stage,
                         "recompute asked" if fresh else "settings changed",
                         " beside the old outputs" if staged else "")
            rd.clear_staging(stage)
            if earlier and not staged:
                rd.remove(spec.outputs)
            rd.write_started(stage, {"hash": h, "staged": staged})
    dist.barrier()
    return rd.staged(stage, spec.outputs) if (rd.read_started(stage) or {}).get("staged") else rd


def mark_done(cfg: RunConfig, run_dir: RunPath, stage: str, info: dict[str, Any]) -> None:
    """Finish a stage: swap staged outputs in, then write its done-marker (atomically; rank 0 only
    under torchrun, then every rank waits)."""
    from latentdiff.core import distributed as dist

    rd = RunDir.of(run_dir)
    if dist.is_main():
        h = stage_hash(cfg, stage)
        if rd.is_staged:
            rd.swap_in()
            rd.write_started(stage, {"hash": h, "staged": False})
        RunDir(rd.root).write_marker(stage, {"hash": h, **info})
    dist.barrier()


def invalidate(run_dir: RunPath, stage: str) -> None:
    """Forget a stage: remove its outputs and markers so the next run recomputes it from scratch."""
    rd = RunDir(RunDir.of(run_dir).root)
    rd.remove(stage_named(stage).outputs)
    if stage == "label":  # labelling workers' checkpoints and markers
        for path in [*rd.worker_dbs(), *rd.worker_markers()]:
            path.unlink(missing_ok=True)
    rd.clear_staging(stage)
    rd.forget(stage)


def crosscoder_plan(cfg: RunConfig) -> dict[str, list[str]]:
    """Crosscoder name -> model names it codes (base first). joint: one over all models; pairwise: one
    per (base, X). With replicate seeds (crosscoder.seeds), one more of each per extra seed."""
    from latentdiff.agent.replicates import replicate_name

    others = [m.name for m in cfg.models if m.role != "base"]
    if cfg.design == "joint":
        plan = {"joint": [cfg.base.name, *others]}
    else:
        plan = {name: [cfg.base.name, name] for name in others}
    seeds = cfg.crosscoder.replicate_seeds
    return {replicate_name(name, s, seeds[0]): members for s in seeds for name, members in plan.items()}


def crosscoder_seed(cfg: RunConfig, name: str) -> int:
    """The seed a planned crosscoder is trained with."""
    from latentdiff.agent.replicates import SUFFIX

    m = SUFFIX.search(name)
    return int(m.group(1)) if m else cfg.crosscoder.replicate_seeds[0]


def check_models(cfg: RunConfig) -> None:
    """Every model path resolves: organisms are built, local-looking paths exist."""
    from latentdiff.core.organisms import resolve_model_path
    from latentdiff.errors import ModelLoadError

    for m in cfg.models:
        path = resolve_model_path(m.path)
        if path.startswith(("/", "./", "../", "~")) and not Path(path).expanduser().exists():
            raise ModelLoadError(f"cannot load {m.path!r} (models.{m.name}.path): no such directory")


def check_device(cfg: RunConfig) -> None:
    """harvest.device names a device this machine has."""
    import torch

    from latentdiff.core.models import resolve_device

    spec = cfg.harvest.device
    try:
        device = resolve_device(spec)
    except (RuntimeError, ValueError) as err:
        raise ConfigError(f"harvest.device={spec!r}: not a device ({' '.join(str(err).split())[:120]})") from None
    if device.type == "cuda":
        n = torch.cuda.device_count()
        if n == 0 or (device.index is not None and device.index >= n):
            raise ConfigError(f"harvest.device={spec!r}: this machine has {n} CUDA device(s)")


def check_judge(cfg: RunConfig) -> None:
    """The judge spec names a judge, and the taxonomy loads."""
    from latentdiff.agent.judges.registry import make_judge
    from latentdiff.agent.judges.taxonomy import load_taxonomy

    make_judge(cfg.judge.spec, cfg.judge)
    load_taxonomy(cfg.judge.taxonomy)


def check_taxonomy(cfg: RunConfig) -> None:
    """The taxonomy loads (aggregate and report count its categories)."""
    from latentdiff.agent.judges.taxonomy import load_taxonomy

    load_taxonomy(cfg.judge.taxonomy)


def check_logging(cfg: RunConfig) -> None:
    """log.tensorboard / log.wandb: their package is installed (one line naming the extra)."""
    from latentdiff.tracking import require

    if cfg.log.tensorboard:
        require("tensorboard", "log.tensorboard")
    if cfg.log.wandb:
        require("wandb", "log.wandb")


def metrics_logger(cfg: RunConfig, run_dir: RunPath, *part: str) -> Any:
    """The experiment logger (`log` section, latentdiff/tracking.py) of one part of a stage, e.g. ('train',
    'joint'): TensorBoard run TB_DIR/train/joint, W&B run NAME-train-joint; a no-op when logging is off."""
    from latentdiff.tracking import MetricsLogger, WandbSettings

    lg, rd = cfg.log, RunDir(RunDir.of(run_dir).root)  # never in a stage's staging dir
    tb_root = Path(lg.tensorboard_dir) if lg.tensorboard_dir else rd.tensorboard
    wb = None
    if lg.wandb:  # wandb.init(dir=D) writes under D/wandb: rd.wandb
        wb = WandbSettings(project=lg.wandb_project, mode=lg.wandb_mode, dir=rd.wandb.parent,
                           name="-".join((cfg.name, *part)), group=cfg.name, config=cfg.model_dump(mode="json"))
    return MetricsLogger(tb_root.joinpath(*part) if lg.tensorboard else None, wb)


def load_models(cfg: RunConfig) -> tuple[list[Any], int]:
    from latentdiff.core.distributed import local_device
    from latentdiff.core.models import check_compatible, load_model, resolve_device

    device = str(local_device(resolve_device(cfg.harvest.device)))  # under torchrun: this rank's GPU
    h = cfg.harvest
    models = [load_model(spec, device, h.device_map, h.max_memory, h.offload_folder) for spec in cfg.models]
    return models, check_compatible(models, cfg.harvest.layer)
