"""The stages of a run, in one table: `STAGES` (name, settings it depends on, outputs, runner, reader,
whether it runs under torchrun). `Run`, the CLI and the results API iterate it; adding a stage is one
entry here plus its runner and reader (docs/design.md, "Adding a stage").

Every path comes from `RunDir` (latentdiff/rundir.py). A stage is skipped when its done-marker holds
the hash of the settings it depends on. Otherwise it (re)computes: with the same settings as a begun,
unfinished run it resumes from the partial, atomically written outputs; with changed settings it first
checks the new settings (`validate`), then builds its outputs in a staging directory beside the old
ones and swaps them in when done (`begin` / `mark_done`), so a failure never destroys finished work.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from latentdiff.config import RunConfig
from latentdiff.errors import ConfigError, LabelIncomplete, StageNotAvailable, StageNotDone
from latentdiff.io import atomic_write, atomic_write_json
from latentdiff.results import (
    HarvestResult,
    IndexResult,
    LabelResult,
    SampleResult,
    SelectResult,
    TrainResult,
    cache_info,
    crosscoder_info,
)
from latentdiff.rundir import RunDir

log = logging.getLogger(__name__)
T = TypeVar("T")

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


def stage_named(name: str) -> Stage:
    """The stage called `name` (StageNotAvailable, one line, for an unknown name)."""
    for stage in STAGES:
        if stage.name == name:
            return stage
    raise StageNotAvailable(f"unknown stage {name!r}; stages: {', '.join(s.name for s in STAGES)}")


def needs(name: str) -> tuple[str, ...]:
    """The stages that must be done before `name` runs alone (its `after`, else the stage before it)."""
    spec = stage_named(name)
    if spec.after is not None:
        return spec.after
    i = STAGE_NAMES.index(name)
    return (STAGE_NAMES[i - 1],) if i > 0 else ()


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


# --------------------------------------------------------------------------- checks of new settings


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


def _load_models(cfg: RunConfig) -> tuple[list[Any], int]:
    from latentdiff.core.distributed import local_device
    from latentdiff.core.models import check_compatible, load_model, resolve_device

    device = str(local_device(resolve_device(cfg.harvest.device)))  # under torchrun: this rank's GPU
    h = cfg.harvest
    models = [load_model(spec, device, h.device_map, h.max_memory, h.offload_folder) for spec in cfg.models]
    return models, check_compatible(models, cfg.harvest.layer)


# --------------------------------------------------------------------------- harvest


def run_harvest(cfg: RunConfig, run_dir: RunPath, show: bool = True) -> None:
    """Paired activations of every model on the train and held-out splits."""
    from latentdiff.core import distributed as dist
    from latentdiff.core.data import iter_context_batches
    from latentdiff.core.harvest import compute_stats, harvest_to_cache

    rd = RunDir.of(run_dir)
    if cfg.harvest.mode == "stream":
        log.info("harvest mode 'stream': training harvests on the fly; caching held-out split only")
    models, layer = _load_models(cfg)
    h = stage_hash(cfg, "harvest")
    if cfg.harvest.mode == "cache":
        harvest_to_cache(
            models, layer, cfg.data, cfg.harvest, "train", cfg.data.n_tokens, rd.cache("train"), h, show
        )
        if dist.is_main():
            compute_stats(rd.cache("train"), cfg.crosscoder.target_rms)
    seen: dict[int, tuple[np.ndarray, str]] = {}  # held-out ctx -> (token ids, DocMeta json), as harvested

    def keep(batch: Any) -> None:
        for row, ctx in enumerate(batch.ctx_index.tolist()):
            n = int(batch.attention_mask[row].sum())
            seen[ctx] = (batch.input_ids[row, :n].numpy().astype(np.int32), batch.docs[row].model_dump_json())

    manifest = harvest_to_cache(models, layer, cfg.data, cfg.harvest, "heldout", cfg.data.n_heldout_tokens,
                                rd.cache("heldout"), h, show, on_batch=keep)
    if not dist.is_main():  # the rest is small and written once, by rank 0
        mark_done(cfg, rd, "harvest", {})
        return
    # held-out token ids and document metadata, for the example sampler: kept while harvesting; tokenized
    # again only when the held-out harvest resumed after a kill (the contexts before the resume point)
    n_ctx = manifest.n_contexts
    if any(c not in seen for c in range(n_ctx)):
        log.info("harvest: reading the held-out token ids again (the held-out harvest was resumed)")
        for batch in iter_context_batches(models[0].tokenizer, cfg.data, "heldout", 256, 10**15):
            keep(batch)
            if batch.ctx_index[-1] >= n_ctx - 1:
                break
    ids = np.full((n_ctx, cfg.data.ctx_len), -1, dtype=np.int32)
    docs: list[str] = []
    for ctx in range(n_ctx):
        row, doc = seen[ctx]
        ids[ctx, : len(row)] = row
        docs.append(doc)
    atomic_write(rd.contexts, lambda p: np.save(p.open("wb"), ids))
    atomic_write(rd.docs, lambda p: p.write_text("\n".join(docs) + "\n"))
    mark_done(cfg, rd, "harvest", {"layer": layer, "heldout_tokens": manifest.n_tokens,
                                   "excluded": manifest.excluded})


def read_harvest(cfg: RunConfig, rd: RunDir, info: dict[str, Any]) -> HarvestResult:
    """The activation caches the harvest wrote."""
    train = cache_info(rd.cache("train")) if cfg.harvest.mode == "cache" else None
    return HarvestResult(layer=info["layer"], mode=cfg.harvest.mode, train=train,
                         heldout=cache_info(rd.cache("heldout")))


# --------------------------------------------------------------------------- train


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
    from latentdiff.errors import ConfigError

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

    models, layer = _load_models(cfg)
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


# --------------------------------------------------------------------------- select


def run_select(cfg: RunConfig, run_dir: RunPath, show: bool = True) -> None:
    """Latent statistics and sides for every pair, written to latents.parquet."""
    from latentdiff.core.cache import iter_shards
    from latentdiff.core.crosscoder import CrossCoder
    from latentdiff.core.select import latent_statistics, latents_table, write_table

    rd = RunDir.of(run_dir)
    names = [m.name for m in cfg.models]
    rows = []
    for cc_name, members in crosscoder_plan(cfg).items():
        cc = CrossCoder.from_pretrained(rd.crosscoder(cc_name))
        cols = [names.index(m) for m in members]
        batches = (s["acts"][:, cols] for s in iter_shards(rd.cache("heldout")))
        stats = latent_statistics(cc, batches, base=0, fts={m: i for i, m in enumerate(members) if i > 0})
        for row in latents_table(stats, cfg.selection):
            rows.append(row.model_copy(update={"crosscoder": cc_name}))
    write_table(rows, rd.latents)
    counts: dict[str, dict[str, int]] = {}
    for r in rows:
        counts.setdefault(r.pair, {}).setdefault(r.side, 0)
        counts[r.pair][r.side] += 1
    for pair, sides in counts.items():
        log.info("select %s: %s", pair, ", ".join(f"{n:,} {side}" for side, n in sorted(sides.items())))
    mark_done(cfg, rd, "select", {"sides": counts})


def read_select(cfg: RunConfig, rd: RunDir, info: dict[str, Any]) -> SelectResult:
    """The side counts per pair (rows: `Run.latent_stats`)."""
    return SelectResult(path=str(rd.latents), method=cfg.selection.method, sides=info["sides"])


# --------------------------------------------------------------------------- sample
def reference_latents(cfg: RunConfig, table: list[Any], cc_name: str) -> list[int]:
    """The reference sample of a crosscoder: `selection.reference_n` latents that are shared in every pair
    (never specific to any model), drawn at random with a seed fixed by the run seed and the crosscoder."""
    import zlib

    rows = [r for r in table if r.crosscoder == cc_name]
    by_latent: dict[int, set[str]] = {}
    for r in rows:
        by_latent.setdefault(r.latent, set()).add(r.side)
    shared = sorted(j for j, sides in by_latent.items() if sides == {"shared"})
    n = min(len(shared), cfg.selection.reference_n)
    if n == 0:
        return []
    rng = np.random.default_rng([cfg.seed, zlib.crc32(cc_name.encode())])
    return sorted(int(j) for j in rng.choice(shared, size=n, replace=False))


def label_plan(cfg: RunConfig, table: list[Any]) -> dict[str, list[Any]]:
    """The latents the agent labels, key -> their LatentStats rows: every model-specific latent (base or
    fine-tune side of some pair) and the reference sample of each crosscoder."""
    reference = {f"{cc}:{j}" for cc in crosscoder_plan(cfg) for j in reference_latents(cfg, table, cc)}
    stats: dict[str, list[Any]] = {}
    for row in table:
        key = f"{row.crosscoder}:{row.latent}"
        if row.side in ("finetuned", "base") or key in reference:
            stats.setdefault(key, []).append(row)
    return stats


def run_sample(cfg: RunConfig, run_dir: RunPath, show: bool = True) -> None:
    """Examples for every selected latent and for the reference sample of shared ones; the share of each
    latent's activation on special tokens (scaffolding) beside them."""
    from transformers import AutoTokenizer

    from latentdiff.core.crosscoder import CrossCoder
    from latentdiff.core.examples import (
        ScaffoldTally,
        build_examples,
        scaffold_path,
        special_token_strings,
        write_examples,
    )
    from latentdiff.core.organisms import resolve_model_path
    from latentdiff.core.select import read_table

    rd = RunDir.of(run_dir)
    heldout = rd.cache("heldout")
    contexts = np.load(rd.contexts)
    docs = [json.loads(ln) for ln in rd.docs.read_text().splitlines() if ln]
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(cfg.base.path), revision=cfg.base.revision)
    special = special_token_strings(tokenizer)
    table = read_table(rd.latents)
    counts = {}
    for cc_name, members in crosscoder_plan(cfg).items():
        rows = [r for r in table if r.crosscoder == cc_name]
        chosen = sorted({r.latent for r in rows if r.side in ("finetuned", "base")} |
                        set(reference_latents(cfg, table, cc_name)))
        cc = CrossCoder.from_pretrained(rd.crosscoder(cc_name))
        cols = [[m.name for m in cfg.models].index(name) for name in members]
        examples = build_examples(
            cc,
            heldout,
            chosen,
            contexts,
            docs,
            tokenizer,
            cfg.sampling,
            seed=cfg.seed + 22,
            cols=cols,
        )
        tally = ScaffoldTally(special)
        path = rd.examples(cc_name)
        counts[cc_name] = write_examples((tally.add(ex) for ex in examples), path)
        atomic_write_json(scaffold_path(path), {str(j): round(v, 6) for j, v in sorted(tally.shares().items())})
    mark_done(cfg, rd, "sample", {"examples": counts})


def read_sample(cfg: RunConfig, rd: RunDir, info: dict[str, Any]) -> SampleResult:
    """The example counts and files (records: `Run.examples`)."""
    counts = info["examples"]
    return SampleResult(examples=counts, paths={n: str(rd.examples(n)) for n in counts})


# --------------------------------------------------------------------------- inspect


def run_inspect(cfg: RunConfig, run_dir: RunPath, show: bool = True) -> None:
    """Per crosscoder and sampled latent: logit lens of each model's decoder vector, the ablation effect on the
    model(s) of its sets over its top contexts, and its activation histogram on the held-out cache
    (core/inspect.py); written to inspect/NAME.json for the latent pages."""
    import time

    import torch

    from latentdiff.core.cache import iter_shards
    from latentdiff.core.crosscoder import CrossCoder
    from latentdiff.core.examples import read_examples
    from latentdiff.core.inspect import (
        ablation_effects,
        activation_histograms,
        cached_codes,
        logit_lens,
        unembedding,
    )
    from latentdiff.core.select import read_table
    from latentdiff.records import LatentInspection, read_inspections

    rd = RunDir.of(run_dir)
    ic = cfg.inspect
    counts: dict[str, int] = {}
    if not ic.enabled:
        mark_done(cfg, rd, "inspect", {"latents": counts, "enabled": False})
        return
    names = [m.name for m in cfg.models]
    models, layer = _load_models(cfg)
    contexts = torch.from_numpy(np.load(rd.contexts))  # [n_ctx, T]
    table = read_table(rd.latents)
    for cc_name, members in crosscoder_plan(cfg).items():
        if rd.inspection(cc_name).is_file():  # finished before a kill under these settings: kept
            counts[cc_name] = len(read_inspections(rd, [cc_name]).get(cc_name, {}))
            continue
        t0 = time.perf_counter()
        cc = CrossCoder.from_pretrained(rd.crosscoder(cc_name))
        cols = [names.index(m) for m in members]
        mine = [models[c] for c in cols]
        tops: dict[int, list[int]] = {}
        upper: dict[int, float] = {}
        for ex in read_examples(rd.examples(cc_name)):
            if ex.kind == "top":
                upper[ex.latent] = max(upper.get(ex.latent, 0.0), ex.max_act)
                if ex.ctx not in tops.setdefault(ex.latent, []) and len(tops[ex.latent]) < ic.ablation_contexts:
                    tops[ex.latent].append(ex.ctx)
        latents = sorted(upper)
        out = {j: LatentInspection(latent=j) for j in latents}
        for i, model in enumerate(mine):  # logit lens of every model's decoder vector
            W_U, gain = unembedding(model)
            for j, lens in logit_lens(cc, latents, i, W_U, gain, model.tokenizer, ic.lens_k).items():
                out[j].lens[members[i]] = lens
        # each latent is ablated in the model(s) it is specific to (a fine-tune, or the base); a latent of the
        # reference sample (shared everywhere) in the first fine-tune of its pairs
        specific: dict[int, set[str]] = {}
        shared: dict[int, str] = {}
        for r in table:
            if r.crosscoder == cc_name and r.latent in out:
                if r.side in ("finetuned", "base"):
                    specific.setdefault(r.latent, set()).add("base" if r.side == "base" else r.pair)
                else:
                    shared.setdefault(r.latent, r.pair)
        targets: dict[int, set[int]] = {}  # crosscoder column -> latents ablated in that model
        for j in latents:
            for model in specific.get(j) or {shared.get(j, members[-1])}:
                if model in members:
                    targets.setdefault(members.index(model), set()).add(j)
        plan = {col: [(j, c) for j in sorted(lats) for c in tops.get(j, [])] for col, lats in sorted(targets.items())}
        # the latents' codes on their contexts: one pass over the held-out cache, not every model's forward again
        every = [r for rows in plan.values() for r in rows]
        codes = cached_codes(cc, iter_shards(rd.cache("heldout"), keys=("acts", "ctx", "pos")), cols, every,
                             contexts.shape[1])  # [R, T]
        start = 0
        for col, rows in plan.items():
            effects = ablation_effects(mine, cc, layer, col, rows, contexts, ic.batch_size,
                                       codes=codes[start:start + len(rows)])
            start += len(rows)
            for j, eff in effects.items():
                out[j].ablation[members[col]] = eff
        hists = activation_histograms(cc, iter_shards(rd.cache("heldout")), cols, latents, upper, ic.bins)
        for j, h in hists.items():
            out[j].histogram = h
        atomic_write_json(rd.inspection(cc_name), {str(j): v.model_dump(mode="json") for j, v in out.items()})
        counts[cc_name] = len(out)
        log.info("inspect %s: %d latents (lens, ablation on %d rows, histograms) in %.0f s", cc_name, len(out),
                 sum(len(tops.get(j, [])) for lats in targets.values() for j in lats), time.perf_counter() - t0)
    mark_done(cfg, rd, "inspect", {"latents": counts, "enabled": True})


def read_inspect(cfg: RunConfig, rd: RunDir, info: dict[str, Any]) -> dict[str, dict[int, Any]]:
    """Crosscoder name -> latent -> LatentInspection (empty when the stage ran disabled)."""
    from latentdiff.records import read_inspections

    return read_inspections(rd, list(info.get("latents", {})))




# --------------------------------------------------------------------------- index


FINGERPRINT_CHARS = 16


def _sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 23):
            h.update(chunk)
    return h.hexdigest()


def crosscoder_fingerprints(cfg: RunConfig, run_dir: RunPath) -> dict[str, dict[str, Any]]:
    """Crosscoder name -> {"sha256": 16-hex prefix of crosscoder.safetensors, "size", "mtime_ns"}: which
    weights the store's rows belong to. The index marker's record is reused while the file's size and
    mtime match it (no rehash); it also stands for weights deleted after indexing."""
    rd = RunDir.of(run_dir)
    recorded: dict[str, Any] = {}
    if is_done(cfg, rd, "index"):
        recorded = (rd.read_marker("index") or {}).get("fingerprints") or {}
    out: dict[str, dict[str, Any]] = {}
    for name in crosscoder_plan(cfg):
        path = rd.crosscoder_weights(name)
        rec = recorded.get(name) if isinstance(recorded.get(name), dict) else None
        if path.is_file():
            st = path.stat()
            if rec and rec.get("sha256") and (rec.get("size"), rec.get("mtime_ns")) == (st.st_size, st.st_mtime_ns):
                out[name] = rec
            else:
                out[name] = {"sha256": _sha256(path)[:FINGERPRINT_CHARS], "size": st.st_size,
                             "mtime_ns": st.st_mtime_ns}
        elif rec and rec.get("sha256"):
            out[name] = rec
    return out


def store_scope(cfg: RunConfig, run_dir: RunPath, fingerprints: dict[str, dict[str, Any]] | None = None) -> Any:
    """The `StoreScope` of a run: its crosscoders' weight fingerprints and its label settings' hash."""
    from latentdiff.store.chroma import StoreScope

    fps = crosscoder_fingerprints(cfg, run_dir) if fingerprints is None else fingerprints
    return StoreScope({name: rec["sha256"] for name, rec in fps.items()}, label=stage_hash(cfg, "label"))


def open_store(cfg: RunConfig, run_dir: RunPath, fingerprints: dict[str, dict[str, Any]] | None = None) -> Any:
    """The run's `LatentStore`, scoped to its crosscoder weights and label settings."""
    from latentdiff.store.chroma import LatentStore

    rd = RunDir.of(run_dir)
    return LatentStore(cfg.store, cfg.name, rd.chroma, scope=store_scope(cfg, rd, fingerprints))


def run_index(cfg: RunConfig, run_dir: RunPath, show: bool = True) -> None:
    """Upsert every example into the Chroma store under its crosscoder's weight fingerprint
    (deterministic ids: reruns do not duplicate); rows of other weights or label settings are removed."""
    from latentdiff.core.examples import read_examples

    rd = RunDir.of(run_dir)
    counts = {}
    fingerprints = crosscoder_fingerprints(cfg, rd)
    from latentdiff.progress import LineProgress

    total = sum((rd.read_marker("sample") or {}).get("examples", {}).values()) or None
    from latentdiff.store.embeddings import VectorCache

    vectors = VectorCache(rd.vectors)
    with open_store(cfg, rd, fingerprints) as store, LineProgress(every_s=30.0, disable=not show) as bar:
        store.prune()
        task = bar.add_task("index (examples stored)", total=total)

        def counted(examples: Any) -> Any:
            for ex in examples:
                bar.advance(task)
                yield ex

        for cc_name in crosscoder_plan(cfg):
            counts[cc_name] = store.add_examples(cc_name, counted(read_examples(rd.examples(cc_name))), vectors)
    log.info("index: %d distinct windows embedded, %d reused", vectors.misses, vectors.hits)
    vectors.close()
    mark_done(cfg, rd, "index", {"examples": counts, "fingerprints": fingerprints})


def read_index(cfg: RunConfig, rd: RunDir, info: dict[str, Any]) -> IndexResult:
    """What went into the store."""
    return IndexResult(examples=info["examples"], store=cfg.store.url or cfg.store.path or str(rd.chroma))


# --------------------------------------------------------------------------- label


def _agent_context(cfg: RunConfig, rd: RunDir, store: Any, judge: Any = None) -> Any:
    from latentdiff.agent.graph import new_budget
    from latentdiff.agent.judges.registry import make_judge
    from latentdiff.agent.judges.taxonomy import load_taxonomy
    from latentdiff.agent.state import AgentContext
    from latentdiff.core.examples import read_scaffold
    from latentdiff.core.select import read_table

    stats = label_plan(cfg, read_table(rd.latents))
    taxonomy = load_taxonomy(cfg.judge.taxonomy)
    judge = judge or make_judge(cfg.judge.spec, cfg.judge, cache_dir=rd.judge_cache, vectors=rd.vectors)
    return AgentContext(cfg=cfg, run_dir=rd, judge=judge, store=store, stats=stats, taxonomy=taxonomy,
                        budget=new_budget(cfg.agent.max_judge_calls, rd), scaffold=read_scaffold(rd.examples_dir))


async def _closing(work: Coroutine[Any, Any, T], judge: Any, owned: bool) -> T:
    """Await `work`, then close the judge (on its own event loop) when this stage made it."""
    try:
        return await work
    finally:
        if owned:
            await judge.aclose()


def label_worker(cfg: RunConfig, run_dir: RunPath, index: int, count: int, judge: Any = None) -> None:
    """One labelling worker of `count` (see `run_label`); needs the index stage done here."""
    rd = RunDir.of(run_dir)
    if is_done(cfg, rd, "label"):
        log.info("stage label: up to date, nothing for a worker to do")
        return
    validate(cfg, ["label"])
    with rd.lock():
        if not is_done(cfg, rd, "index"):
            # Another machine may have indexed into the shared store: then this one needs only `sample`.
            if not is_done(cfg, rd, "sample"):
                raise StageNotAvailable("a labelling worker needs stage 'sample' done with these settings first")
            with open_store(cfg, rd) as store:  # counts only examples of this run's crosscoder weights
                indexed = cfg.store.url is not None and store.examples.count() > 0 and store.count_examples() > 0
            if not indexed:
                raise StageNotAvailable("a labelling worker needs the examples indexed: run `latentdiff index "
                                        "CONFIG` here, or once on any machine against the shared store (store.url)")
        run_label(cfg, begin(cfg, rd, "label"), judge=judge, worker=(index, count))


def run_label(cfg: RunConfig, run_dir: RunPath, show: bool = True, judge: Any = None,
              worker: tuple[int, int] | None = None) -> None:
    """The LangGraph agent labels every model-specific latent (resumable via agent.sqlite).

    `worker=(i, n)` labels only worker i's share of the latents (for n workers on one or several
    machines, sharing a Chroma server through store.url) and does not finish the stage; the run
    without `worker` then collects every finding from the store, labels whatever is still missing,
    aggregates and marks the stage done.

    Latents whose judging failed (judge down, errors, junk answers) leave the stage not done:
    `LabelIncomplete` says how many, and running the stage again judges exactly those latents."""
    import asyncio

    from latentdiff.agent.graph import import_store_findings, label_share, run_agent, worker_tag
    from latentdiff.agent.state import read_findings

    rd = RunDir.of(run_dir)
    h = stage_hash(cfg, "label")
    thread = f"label-{h}"
    part = ("label",) if worker is None else ("label", worker_tag(*worker))
    with open_store(cfg, rd) as store, metrics_logger(cfg, rd, *part) as tracker:
        owned = judge is None  # a judge made here is closed here (its HTTP clients, caches); a caller's is not
        ctx = _agent_context(cfg, rd, store, judge)
        ctx.tracker = tracker  # label/ scalars after each wave (agent/nodes.py, assess)
        if worker is not None:
            index, count = worker
            try:
                mine = asyncio.run(_closing(label_share(ctx, thread, index, count), ctx.judge, owned))
            finally:
                ctx.close()
            atomic_write_json(rd.worker_marker(worker_tag(index, count)), {"hash": h, "judge_calls": ctx.budget.used})
            _raise_if_judging_failed(mine, f"worker {index}/{count}", "run it again (or the merge run, "
                                     "`label` without --worker) to judge them again")
            log.info("worker %d/%d done (%d judge calls); run `label` without --worker to merge",
                     index, count, ctx.budget.used)
            return
        store.prune(examples=False)  # findings of other label settings or crosscoder weights (served by nothing)
        # only findings of workers that labelled under these settings (the store may still hold
        # findings of an earlier label run with other settings, e.g. another judge or agent config)
        workers = [json.loads(m.read_text()) for m in rd.worker_markers()]
        imported = import_store_findings(ctx) if any(w.get("hash") == h for w in workers) else 0
        if imported:
            log.info("collected the findings of %d latents labelled by other workers", imported)
        try:
            state = asyncio.run(_closing(run_agent(ctx, thread_id=thread), ctx.judge, owned))
        finally:
            ctx.close()
    recorded = read_findings(rd)
    _raise_if_judging_failed(recorded, "stage label", "run the same command again to judge them again")
    findings = {f.ref.key: f for f in recorded}
    failed = sum(f.label is None for f in findings.values())
    log.info("labelled %d latents, %d failed", len(findings) - failed, failed)
    mark_done(cfg, rd, "label", {"latents": len(findings), "failed": failed,
                                 "judge_calls": ctx.budget.used, "skipped": state.get("skipped", []),
                                 "stop_reason": state.get("stop_reason")})


def _raise_if_judging_failed(findings: list[Any], who: str, how: str) -> None:
    """LabelIncomplete (one line) when some latents' judging failed: the stage is then not marked done
    and a rerun judges exactly those latents again (latents labelled OK are never judged again)."""
    from latentdiff.agent.state import needs_retry

    failed = {f.ref.key: f.failure for f in findings if needs_retry(f)}
    if not failed:
        return
    n_keys = len({f.ref.key for f in findings})
    first = " ".join(str(next(iter(failed.values()))).split())
    first = first if len(first) <= 200 else first[:197] + "..."
    raise LabelIncomplete(f"{who}: judging failed for {len(failed)} of {n_keys} latents ({first}); "
                          f"not done: {how} (latents labelled OK are kept)")


def read_label(cfg: RunConfig, rd: RunDir, info: dict[str, Any]) -> LabelResult:
    """The agent's counts (records: `Run.findings`)."""
    return LabelResult(latents=info["latents"], failed=info["failed"], judge_calls=info["judge_calls"],
                       skipped=info.get("skipped", []))


# --------------------------------------------------------------------------- aggregate / report


def run_aggregate(cfg: RunConfig, run_dir: RunPath, show: bool = True) -> None:
    """Recompute aggregate.json from the recorded findings (e.g. after changing report settings)."""
    from latentdiff.agent.judges.taxonomy import load_taxonomy
    from latentdiff.agent.summary import write_aggregate

    rd = RunDir.of(run_dir)
    info = RunDir(rd.root).read_marker("label") or {}
    path = write_aggregate(cfg, rd, load_taxonomy(cfg.judge.taxonomy), info.get("skipped", []),
                           info.get("stop_reason"))
    mark_done(cfg, rd, "aggregate", {"path": str(RunDir(rd.root).aggregate if rd.is_staged else path)})


def read_aggregate(cfg: RunConfig, rd: RunDir, info: dict[str, Any]) -> Any:
    """aggregate.json as the typed `Aggregate`."""
    from latentdiff.agent.aggregate import Aggregate

    return Aggregate.model_validate_json(rd.aggregate.read_text())


def run_report(cfg: RunConfig, run_dir: RunPath, show: bool = True) -> None:
    """report/report.{json,md,html} with embedded plots."""
    from latentdiff.agent.report import write_report

    rd = RunDir.of(run_dir)
    write_report(cfg, rd)
    out = RunDir(rd.root).report_dir
    mark_done(cfg, rd, "report", {"path": str(out)})
    log.info("report written to %s", out)


def read_report(cfg: RunConfig, rd: RunDir, info: dict[str, Any]) -> Any:
    """report.json as the typed `Report` (assembled afresh when the report has no JSON format)."""
    from latentdiff.agent.report.build import Report, build_report

    path = rd.report_json
    return Report.model_validate_json(path.read_text()) if path.is_file() else build_report(cfg, rd)


# --------------------------------------------------------------------------- the table

_CORE = ("models", "data", "harvest")
_LABEL = (*_CORE, "design", "crosscoder", "selection", "sampling", "store", "judge", "agent")
_REPORT = (*_LABEL, "headline", "headline_exclusive", "report")

STAGES: tuple[Stage, ...] = (
    Stage("harvest", _CORE, (RunDir.ACTIVATIONS,), run_harvest, read_harvest, distributed=True,
          checks=(check_models, check_device)),
    Stage("train", (*_CORE, "design", "crosscoder"), (RunDir.CROSSCODERS,), run_train, read_train,
          distributed=True, checks=(check_device, check_logging)),
    Stage("select", (*_CORE, "design", "crosscoder", "selection"), (RunDir.LATENTS,), run_select, read_select),
    Stage("sample", (*_CORE, "design", "crosscoder", "selection", "sampling"), (RunDir.EXAMPLES,), run_sample,
          read_sample, checks=(check_models,)),
    Stage("inspect", (*_CORE, "design", "crosscoder", "selection", "sampling", "inspect"), (RunDir.INSPECT,),
          run_inspect, read_inspect, checks=(check_models, check_device)),
    # inspect only feeds the report's latent pages: labelling does not wait for it
    Stage("index", (*_CORE, "design", "crosscoder", "selection", "sampling", "store"), (), run_index, read_index,
          after=("sample",)),
    # the agent writes aggregate.json when it finishes: rebuilt (and swapped in) with the findings
    Stage("label", _LABEL, (RunDir.FINDINGS, RunDir.AGENT_DB, RunDir.AGGREGATE), run_label, read_label,
          checks=(check_judge, check_logging)),
    Stage("aggregate", _REPORT, (RunDir.AGGREGATE,), run_aggregate, read_aggregate, checks=(check_taxonomy,)),
    Stage("report", (*_REPORT, "inspect"), (RunDir.REPORT,), run_report, read_report, checks=(check_taxonomy,)),
)
STAGE_NAMES: tuple[str, ...] = tuple(s.name for s in STAGES)
