"""The core stages of a run: harvest -> train -> select -> sample, each over the run directory.

Run directory layout:
    config.yaml                        the resolved RunConfig
    stages/STAGE.json                  done-marker with the hash of the settings the stage used
    activations/{train,heldout}/       sharded caches (manifest.json, shard_*.safetensors)
    activations/heldout/contexts.npy   held-out token ids [n_ctx, ctx_len] (-1 = padding)
    activations/heldout/docs.jsonl     one DocMeta per held-out context
    crosscoders/NAME/                  cfg.json, crosscoder.safetensors, metrics.jsonl
    latents.parquet                    LatentStats rows (every latent x pair)
    examples/NAME.jsonl.gz             Example records of the selected latents
A stage is skipped when its marker holds the same hash; otherwise it (re)computes, resuming from
whatever partial, atomically-written output is there.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from latentdiff.config import RunConfig
from latentdiff.errors import LabelIncomplete, StageNotAvailable
from latentdiff.io import atomic_write, atomic_write_json

log = logging.getLogger(__name__)

STAGE_SECTIONS: dict[str, tuple[str, ...]] = {
    "harvest": ("models", "data", "harvest"),
    "train": ("models", "data", "harvest", "design", "crosscoder"),
    "select": ("models", "data", "harvest", "design", "crosscoder", "selection"),
    "sample": ("models", "data", "harvest", "design", "crosscoder", "selection", "sampling"),
    "index": ("models", "data", "harvest", "design", "crosscoder", "selection", "sampling", "store"),
    "label": ("models", "data", "harvest", "design", "crosscoder", "selection", "sampling", "store",
              "judge", "agent"),
    "aggregate": ("models", "data", "harvest", "design", "crosscoder", "selection", "sampling", "store",
                  "judge", "agent", "headline", "headline_exclusive", "report"),
    "report": ("models", "data", "harvest", "design", "crosscoder", "selection", "sampling", "store",
               "judge", "agent", "headline", "headline_exclusive", "report"),
}


STAGE_OUTPUTS: dict[str, tuple[str, ...]] = {
    "harvest": ("activations",),
    "train": ("crosscoders",),
    "select": ("latents.parquet",),
    "sample": ("examples",),
    "index": (),  # upserts are idempotent: nothing to remove
    "label": ("findings", "agent.sqlite"),
    "aggregate": ("aggregate.json",),
    "report": ("report",),
}


def begin(cfg: RunConfig, run_dir: Path, stage: str) -> None:
    """Before (re)computing a stage: outputs made under other settings are removed, partial
    outputs made under the same settings are kept so the stage resumes from them."""
    from latentdiff.core import distributed as dist

    dist.init_from_env()  # under torchrun: join the process group (no-op in a single process)
    started = run_dir / "stages" / f"{stage}.started.json"
    h = stage_hash(cfg, stage)
    if dist.is_main():
        if started.is_file() and json.loads(started.read_text()).get("hash") != h:
            log.info("stage %s: settings changed, recomputing from scratch", stage)
            invalidate(run_dir, stage)
        atomic_write_json(started, {"hash": h})
    dist.barrier()


def invalidate(run_dir: Path, stage: str) -> None:
    """Forget a stage: remove its outputs and markers so the next run recomputes it from scratch."""
    import shutil

    for name in STAGE_OUTPUTS[stage]:
        path = run_dir / name
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
    if stage == "label":  # labelling workers' checkpoints and markers
        for path in [*run_dir.glob("agent-w*.sqlite"), *(run_dir / "stages").glob("label-w*.json")]:
            path.unlink(missing_ok=True)
    for marker in (f"{stage}.json", f"{stage}.started.json"):
        (run_dir / "stages" / marker).unlink(missing_ok=True)


def stage_hash(cfg: RunConfig, stage: str) -> str:
    """Hash of the config sections a stage depends on."""
    return cfg.section_hash(*STAGE_SECTIONS[stage])


def is_done(cfg: RunConfig, run_dir: Path, stage: str) -> bool:
    """True if the stage's marker matches the current settings."""
    marker = run_dir / "stages" / f"{stage}.json"
    return marker.is_file() and json.loads(marker.read_text()).get("hash") == stage_hash(cfg, stage)


def mark_done(cfg: RunConfig, run_dir: Path, stage: str, info: dict[str, Any]) -> None:
    """Write the stage's done-marker (atomically; rank 0 only under torchrun, then every rank waits)."""
    from latentdiff.core import distributed as dist

    if dist.is_main():
        atomic_write_json(run_dir / "stages" / f"{stage}.json", {"hash": stage_hash(cfg, stage), **info})
    dist.barrier()


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


def _load_models(cfg: RunConfig) -> tuple[list[Any], int]:
    from latentdiff.core.distributed import local_device
    from latentdiff.core.models import check_compatible, load_model, resolve_device

    device = str(local_device(resolve_device(cfg.harvest.device)))  # under torchrun: this rank's GPU
    h = cfg.harvest
    models = [load_model(spec, device, h.device_map, h.max_memory, h.offload_folder) for spec in cfg.models]
    return models, check_compatible(models, cfg.harvest.layer)


# --------------------------------------------------------------------------- harvest


def run_harvest(cfg: RunConfig, run_dir: Path, show: bool = True) -> None:
    """Paired activations of every model on the train and held-out splits."""
    from latentdiff.core import distributed as dist
    from latentdiff.core.data import iter_context_batches
    from latentdiff.core.harvest import compute_stats, harvest_to_cache

    if cfg.harvest.mode == "stream":
        log.info("harvest mode 'stream': training harvests on the fly; caching held-out split only")
    models, layer = _load_models(cfg)
    h = stage_hash(cfg, "harvest")
    acts = run_dir / "activations"
    if cfg.harvest.mode == "cache":
        harvest_to_cache(
            models, layer, cfg.data, cfg.harvest, "train", cfg.data.n_tokens, acts / "train", h, show
        )
        if dist.is_main():
            compute_stats(acts / "train", cfg.crosscoder.target_rms)
    manifest = harvest_to_cache(
        models, layer, cfg.data, cfg.harvest, "heldout", cfg.data.n_heldout_tokens, acts / "heldout", h, show
    )
    if not dist.is_main():  # the rest is small and written once, by rank 0
        mark_done(cfg, run_dir, "harvest", {})
        return
    # held-out token ids and document metadata, for the example sampler
    ids = np.full((manifest.n_contexts, cfg.data.ctx_len), -1, dtype=np.int32)
    docs: list[str] = []
    for batch in iter_context_batches(models[0].tokenizer, cfg.data, "heldout", 256, 10**15):
        for row, ctx in enumerate(batch.ctx_index.tolist()):
            if ctx >= manifest.n_contexts:
                break
            n = int(batch.attention_mask[row].sum())
            ids[ctx, :n] = batch.input_ids[row, :n].numpy()
            docs.append(batch.docs[row].model_dump_json())
        if batch.ctx_index[-1] >= manifest.n_contexts - 1:
            break
    atomic_write(acts / "heldout" / "contexts.npy", lambda p: np.save(p.open("wb"), ids))
    atomic_write(acts / "heldout" / "docs.jsonl", lambda p: p.write_text("\n".join(docs) + "\n"))
    mark_done(
        cfg,
        run_dir,
        "harvest",
        {"layer": layer, "heldout_tokens": manifest.n_tokens, "excluded": manifest.excluded},
    )


# --------------------------------------------------------------------------- train


def run_train(cfg: RunConfig, run_dir: Path, show: bool = True) -> None:
    """Train every planned crosscoder (resumable)."""
    from latentdiff.core.cache import ShuffledStream, load_stats, read_manifest
    from latentdiff.core.crosscoder import CrossCoderSpec
    from latentdiff.core.distributed import local_device
    from latentdiff.core.models import resolve_device
    from latentdiff.core.train import Trainer

    names = [m.name for m in cfg.models]
    acts = run_dir / "activations" / "train"
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
    for cc_name, members in crosscoder_plan(cfg).items():
        out = run_dir / "crosscoders" / cc_name
        if (out / "crosscoder.safetensors").is_file() and not (out / "checkpoint.pt").is_file():
            continue
        cols = [names.index(m) for m in members]
        spec = CrossCoderSpec(arch=c.arch, n_models=len(cols), d_model=d_model, dict_size=c.dict_size, k=c.k,
                              n_shared=c.n_shared, model_names=members)
        seed = crosscoder_seed(cfg, cc_name)
        # a replicate has its own data order as well as its own init (stream mode: one shared stream)
        src = ShuffledStream(acts, c.batch_size, seed=seed).batches if cfg.harvest.mode == "cache" else source
        trainer = Trainer(c.model_copy(update={"seed": seed}), spec, mean[cols], scale[cols], out, device)

        def batches(start: int, cols: list[int] = cols, src: Any = src):
            for b in src(start):
                yield b[:, cols]

        trainer.fit(batches, show=show)
    mark_done(cfg, run_dir, "train", {"crosscoders": list(crosscoder_plan(cfg))})


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


# --------------------------------------------------------------------------- select


def run_select(cfg: RunConfig, run_dir: Path, show: bool = True) -> None:
    """Latent statistics and sides for every pair, written to latents.parquet."""
    from latentdiff.core.cache import iter_shards
    from latentdiff.core.crosscoder import CrossCoder
    from latentdiff.core.select import latent_statistics, latents_table, write_table

    names = [m.name for m in cfg.models]
    heldout = run_dir / "activations" / "heldout"
    rows = []
    for cc_name, members in crosscoder_plan(cfg).items():
        cc = CrossCoder.from_pretrained(run_dir / "crosscoders" / cc_name)
        cols = [names.index(m) for m in members]
        batches = (s["acts"][:, cols] for s in iter_shards(heldout))
        stats = latent_statistics(cc, batches, base=0, fts={m: i for i, m in enumerate(members) if i > 0})
        for row in latents_table(stats, cfg.selection):
            rows.append(row.model_copy(update={"crosscoder": cc_name}))
    write_table(rows, run_dir / "latents.parquet")
    counts: dict[str, dict[str, int]] = {}
    for r in rows:
        counts.setdefault(r.pair, {}).setdefault(r.side, 0)
        counts[r.pair][r.side] += 1
    log.info("sides per pair: %s", counts)
    mark_done(cfg, run_dir, "select", {"sides": counts})


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


def run_sample(cfg: RunConfig, run_dir: Path, show: bool = True) -> None:
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

    heldout = run_dir / "activations" / "heldout"
    contexts = np.load(heldout / "contexts.npy")
    docs = [json.loads(ln) for ln in (heldout / "docs.jsonl").read_text().splitlines() if ln]
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(cfg.base.path), revision=cfg.base.revision)
    special = special_token_strings(tokenizer)
    table = read_table(run_dir / "latents.parquet")
    counts = {}
    for cc_name, members in crosscoder_plan(cfg).items():
        rows = [r for r in table if r.crosscoder == cc_name]
        chosen = sorted({r.latent for r in rows if r.side in ("finetuned", "base")} |
                        set(reference_latents(cfg, table, cc_name)))
        cc = CrossCoder.from_pretrained(run_dir / "crosscoders" / cc_name)
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
        path = run_dir / "examples" / f"{cc_name}.jsonl.gz"
        counts[cc_name] = write_examples((tally.add(ex) for ex in examples), path)
        atomic_write_json(scaffold_path(path), {str(j): round(v, 6) for j, v in sorted(tally.shares().items())})
    mark_done(cfg, run_dir, "sample", {"examples": counts})


# --------------------------------------------------------------------------- index / label / aggregate


FINGERPRINT_CHARS = 16


def _sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 23):
            h.update(chunk)
    return h.hexdigest()


def crosscoder_fingerprints(cfg: RunConfig, run_dir: Path) -> dict[str, dict[str, Any]]:
    """Crosscoder name -> {"sha256": 16-hex prefix of crosscoder.safetensors, "size", "mtime_ns"}: which
    weights the store's rows belong to. The index marker's record is reused while the file's size and
    mtime match it (no rehash); it also stands for weights deleted after indexing."""
    marker = run_dir / "stages" / "index.json"
    recorded: dict[str, Any] = {}
    if is_done(cfg, run_dir, "index"):
        recorded = json.loads(marker.read_text()).get("fingerprints") or {}
    out: dict[str, dict[str, Any]] = {}
    for name in crosscoder_plan(cfg):
        path = run_dir / "crosscoders" / name / "crosscoder.safetensors"
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


def store_scope(cfg: RunConfig, run_dir: Path, fingerprints: dict[str, dict[str, Any]] | None = None) -> Any:
    """The `StoreScope` of a run: its crosscoders' weight fingerprints and its label settings' hash."""
    from latentdiff.store.chroma import StoreScope

    fps = crosscoder_fingerprints(cfg, run_dir) if fingerprints is None else fingerprints
    return StoreScope({name: rec["sha256"] for name, rec in fps.items()}, label=stage_hash(cfg, "label"))


def open_store(cfg: RunConfig, run_dir: Path, fingerprints: dict[str, dict[str, Any]] | None = None) -> Any:
    """The run's `LatentStore`, scoped to its crosscoder weights and label settings."""
    from latentdiff.store.chroma import LatentStore

    return LatentStore(cfg.store, cfg.name, run_dir / "chroma", scope=store_scope(cfg, run_dir, fingerprints))


def run_index(cfg: RunConfig, run_dir: Path, show: bool = True) -> None:
    """Upsert every example into the Chroma store under its crosscoder's weight fingerprint
    (deterministic ids: reruns do not duplicate); rows of other weights or label settings are removed."""
    from latentdiff.core.examples import read_examples

    counts = {}
    fingerprints = crosscoder_fingerprints(cfg, run_dir)
    with open_store(cfg, run_dir, fingerprints) as store:
        store.prune()
        for cc_name in crosscoder_plan(cfg):
            counts[cc_name] = store.add_examples(cc_name, read_examples(run_dir / "examples" / f"{cc_name}.jsonl.gz"))
    mark_done(cfg, run_dir, "index", {"examples": counts, "fingerprints": fingerprints})


def _agent_context(cfg: RunConfig, run_dir: Path, store: Any, judge: Any = None) -> Any:
    from latentdiff.agent.graph import new_budget
    from latentdiff.agent.judges.registry import make_judge
    from latentdiff.agent.judges.taxonomy import load_taxonomy
    from latentdiff.agent.state import AgentContext
    from latentdiff.core.examples import read_scaffold
    from latentdiff.core.select import read_table

    stats = label_plan(cfg, read_table(run_dir / "latents.parquet"))
    taxonomy = load_taxonomy(cfg.judge.taxonomy)
    judge = judge or make_judge(cfg.judge.spec, cfg.judge, cache_dir=run_dir / "judge_cache")
    return AgentContext(cfg=cfg, run_dir=run_dir, judge=judge, store=store, stats=stats, taxonomy=taxonomy,
                        budget=new_budget(cfg.agent.max_judge_calls, run_dir),
                        scaffold=read_scaffold(run_dir / "examples"))


def import_store_findings(ctx: Any) -> int:
    """Copy findings that other labelling workers put in the (shared) store into this run's
    findings/ table: every latent whose findings for all its pairs are there. Returns how many."""
    by_key: dict[str, list[Any]] = {}
    for f in ctx.store.iter_findings():
        by_key.setdefault(f.ref.key, []).append(f)
    n = 0
    for key, found in by_key.items():
        if key in ctx.stats and not ctx.is_finished(key) and len(found) == len(ctx.stats[key]):
            ctx.write_findings(key, sorted(found, key=lambda f: f.pair))
            n += 1
    return n


def label_worker(cfg: RunConfig, run_dir: Path, index: int, count: int, judge: Any = None) -> None:
    """One labelling worker of `count` (see `run_label`); needs the index stage done here."""
    from latentdiff.errors import StageNotAvailable

    if is_done(cfg, run_dir, "label"):
        log.info("stage label: up to date, nothing for a worker to do")
        return
    if not is_done(cfg, run_dir, "index"):
        # Another machine may have indexed into the shared store: then this one needs only `sample`.
        if not is_done(cfg, run_dir, "sample"):
            raise StageNotAvailable("a labelling worker needs stage 'sample' done with these settings first")
        with open_store(cfg, run_dir) as store:  # counts only examples of this run's crosscoder weights
            indexed = cfg.store.url is not None and store.examples.count() > 0 and store.count_examples() > 0
        if not indexed:
            raise StageNotAvailable("a labelling worker needs the examples indexed: run `latentdiff index CONFIG` "
                                    "here, or once on any machine against the shared store (store.url)")
    begin(cfg, run_dir, "label")
    run_label(cfg, run_dir, judge=judge, worker=(index, count))


def run_label(cfg: RunConfig, run_dir: Path, show: bool = True, judge: Any = None,
              worker: tuple[int, int] | None = None) -> None:
    """The LangGraph agent labels every model-specific latent (resumable via agent.sqlite).

    `worker=(i, n)` labels only worker i's share of the latents (for n workers on one or several
    machines, sharing a Chroma server through store.url) and does not finish the stage; the run
    without `worker` then collects every finding from the store, labels whatever is still missing,
    aggregates and marks the stage done.

    Latents whose judging failed (judge down, errors, junk answers) leave the stage not done:
    `LabelIncomplete` says how many, and running the stage again judges exactly those latents."""
    import asyncio

    from latentdiff.agent.graph import run_agent
    from latentdiff.agent.nodes import worker_of
    from latentdiff.agent.state import read_findings

    thread = f"label-{stage_hash(cfg, 'label')}"
    with open_store(cfg, run_dir) as store:
        ctx = _agent_context(cfg, run_dir, store, judge)
        if worker is not None:
            index, count = worker
            ctx.worker = worker
            tag = f"w{index}of{count}"
            asyncio.run(run_agent(ctx, thread_id=f"{thread}-{tag}", db_name=f"agent-{tag}.sqlite"))
            atomic_write_json(run_dir / "stages" / f"label-{tag}.json",
                              {"hash": stage_hash(cfg, "label"), "judge_calls": ctx.budget.used})
            mine = [f for f in read_findings(run_dir) if worker_of(f.ref.key, count) == index]
            _raise_if_judging_failed(mine, f"worker {index}/{count}", "run it again (or the merge run, "
                                     "`label` without --worker) to judge them again")
            log.info("worker %d/%d done (%d judge calls); run `label` without --worker to merge",
                     index, count, ctx.budget.used)
            return
        store.prune()  # findings of other label settings or crosscoder weights (served by nothing)
        # only findings of workers that labelled under these settings (the store may still hold
        # findings of an earlier label run with other settings, e.g. another judge or agent config)
        h = stage_hash(cfg, "label")
        workers = [json.loads(m.read_text()) for m in (run_dir / "stages").glob("label-w*.json")]
        imported = import_store_findings(ctx) if any(w.get("hash") == h for w in workers) else 0
        if imported:
            log.info("collected the findings of %d latents labelled by other workers", imported)
        state = asyncio.run(run_agent(ctx, thread_id=thread))
    recorded = read_findings(run_dir)
    _raise_if_judging_failed(recorded, "stage label", "run the same command again to judge them again")
    findings = {f.ref.key: f for f in recorded}
    failed = sum(f.label is None for f in findings.values())
    log.info("labelled %d latents, %d failed", len(findings) - failed, failed)
    mark_done(cfg, run_dir, "label", {"latents": len(findings), "failed": failed,
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


def run_aggregate(cfg: RunConfig, run_dir: Path, show: bool = True) -> None:
    """Recompute aggregate.json from the recorded findings (e.g. after changing report settings)."""
    from latentdiff.agent.judges.taxonomy import load_taxonomy
    from latentdiff.agent.summary import write_aggregate

    marker = run_dir / "stages" / "label.json"
    info = json.loads(marker.read_text()) if marker.is_file() else {}
    path = write_aggregate(cfg, run_dir, load_taxonomy(cfg.judge.taxonomy), info.get("skipped", []),
                           info.get("stop_reason"))
    mark_done(cfg, run_dir, "aggregate", {"path": str(path)})


def run_report(cfg: RunConfig, run_dir: Path, show: bool = True) -> None:
    """report/report.{json,md,html} with embedded plots."""
    from latentdiff.agent.report import write_report

    out = write_report(cfg, run_dir)
    log.info("report written to %s", out)
    mark_done(cfg, run_dir, "report", {"path": str(out)})
