"""The train stage: every planned crosscoder, resumable (or one imported with crosscoder.init_from)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from latentdiff.config import RunConfig
from latentdiff.errors import ConfigError, StageNotAvailable
from latentdiff.results import TrainResult, crosscoder_info
from latentdiff.rundir import RunDir
from latentdiff.stages.base import RunPath, crosscoder_plan, crosscoder_seed, load_models, mark_done, metrics_logger

log = logging.getLogger(__name__)


def run_train(cfg: RunConfig, run_dir: RunPath, show: bool = True) -> None:
    """Train every planned crosscoder (resumable)."""
    from latentdiff.core import distributed as dist
    from latentdiff.core.cache import ShuffledStream, load_stats, read_manifest
    from latentdiff.core.crosscoder import CrossCoderSpec
    from latentdiff.core.distributed import local_device
    from latentdiff.core.models import resolve_device
    from latentdiff.core.train import Trainer
    from latentdiff.tracking import MetricsLogger

    rd = RunDir.of(run_dir)
    names = [m.name for m in cfg.models]
    acts = rd.cache("train")
    c = cfg.crosscoder
    if cfg.harvest.mode == "stream":
        source, d_model = _stream_source(cfg, acts)
    else:
        manifest = read_manifest(acts)
        if manifest is None:
            raise StageNotAvailable(f"no activation cache in {acts}: run the harvest stage first")
        d_model = manifest.d_model
        source = ShuffledStream(acts, c.batch_size, seed=c.seed).batches
    mean, scale = load_stats(acts)  # [M_all, D], [M_all]
    device = local_device(resolve_device(cfg.harvest.device))  # under torchrun: this rank's GPU
    plan = crosscoder_plan(cfg)
    if c.init_from is not None:
        _import_crosscoder(cfg, rd, plan, d_model)
        mark_done(cfg, rd, "train", {"crosscoders": list(plan), "init_from": c.init_from})
        return
    for cc_name, members in plan.items():
        if rd.crosscoder_weights(cc_name).is_file() and not rd.crosscoder_checkpoint(cc_name).is_file():
            continue
        cols = [names.index(m) for m in members]
        spec = CrossCoderSpec(arch=c.arch, n_models=len(cols), d_model=d_model, dict_size=c.dict_size, k=c.k,
                              n_shared=c.n_shared, model_names=members)
        seed = crosscoder_seed(cfg, cc_name)
        # a replicate has its own data order as well as its own init (stream mode: one shared stream)
        src = ShuffledStream(acts, c.batch_size, seed=seed).batches if cfg.harvest.mode == "cache" else source
        trainer = Trainer(c.model_copy(update={"seed": seed}), spec, mean[cols], scale[cols],
                          rd.crosscoder(cc_name), device)

        def batches(start: int, cols: list[int] = cols, src: Any = src):
            for b in src(start):
                yield b[:, cols]

        with metrics_logger(cfg, rd, "train", cc_name) if dist.is_main() else MetricsLogger() as tracker:
            trainer.fit(batches, show=show, tracker=tracker)
    mark_done(cfg, rd, "train", {"crosscoders": list(crosscoder_plan(cfg))})


def _import_crosscoder(cfg: RunConfig, rd: RunDir, plan: dict[str, list[str]], d_model: int) -> None:
    """`crosscoder.init_from`: load a published crosscoder (core/formats.py) as the run's only crosscoder."""
    from latentdiff.core.cache import iter_shards
    from latentdiff.core.formats import detect_format, load_foreign, resolve_source

    c = cfg.crosscoder
    if len(plan) != 1:
        raise ConfigError(f"crosscoder.init_from loads one crosscoder, but this design trains {len(plan)} "
                          f"({', '.join(plan)}); use design: joint with the crosscoder's models")
    (cc_name, members), = plan.items()
    names = [m.name for m in cfg.models]
    cols = [names.index(m) for m in members]
    sample = None
    if c.init_scales is None and detect_format(resolve_source(c.init_from))[0] == "ckkissane":
        sample = next(iter_shards(rd.cache("train")))["acts"][:, cols].float()  # [N, M, D] to estimate scales
    cc = load_foreign(c.init_from, c.init_format or "auto", model_names=members, scales=c.init_scales,
                      sample=sample)
    if (cc.spec.n_models, cc.spec.d_model) != (len(members), d_model):
        raise ConfigError(f"crosscoder.init_from: {c.init_from} codes {cc.spec.n_models} models of width "
                          f"{cc.spec.d_model}, this run has {len(members)} of width {d_model}")
    cc.save(rd.crosscoder(cc_name))
    log.info("crosscoder %s loaded from %s (%s, %d latents); training skipped", cc_name, c.init_from,
             cc.spec.arch, cc.spec.dict_size)


def _stream_source(cfg: RunConfig, acts: Path) -> tuple[Any, int]:
    """Stream mode: batches harvested on the fly through an in-memory shuffle buffer (no cache).

    Normalisation statistics come from the first shuffle buffer's worth of rows and are saved in
    `acts/stats.safetensors`, so a resumed run uses the same ones; a resumed run replays the
    deterministic stream up to its checkpoint (harvest compute is spent again, no data is lost).
    """
    import itertools

    from latentdiff.core import distributed as dist
    from latentdiff.core.cache import save_stats
    from latentdiff.core.harvest import normalization_stats, stream_batches

    models, layer = load_models(cfg)
    c = cfg.crosscoder

    def source(start: int):
        gen = stream_batches(models, layer, cfg.data, cfg.harvest, c.batch_size, seed=c.seed)
        return itertools.islice(gen, start, None)

    if dist.is_main() and not (acts / "stats.safetensors").is_file():
        n = min(cfg.harvest.shuffle_buffer_tokens, cfg.data.n_tokens)
        first = itertools.islice(source(0), max(1, n // c.batch_size))  # the first buffer's worth of rows
        save_stats(acts, *normalization_stats(first, c.target_rms))
    dist.barrier()  # under torchrun every rank replays the whole stream and trains on its slice of each batch
    return source, models[0].d_model


def read_train(cfg: RunConfig, rd: RunDir, info: dict[str, Any]) -> TrainResult:
    """Every planned crosscoder with its final metrics."""
    out = {}
    for name in info["crosscoders"]:
        spec = json.loads(rd.crosscoder_spec(name).read_text())
        out[name] = crosscoder_info(name, rd.crosscoder(name), spec, rd.training_metrics(name))
    return TrainResult(crosscoders=out)
