"""Paired activation harvest: run 2..N models on the same contexts, keep one layer's residual stream.

Two modes:
- cache: `harvest_to_cache` writes bf16 shards + manifest (resumable at shard granularity);
- stream: `stream_batches` feeds an in-memory shuffle buffer straight to training (no disk).
Peak memory is bounded by one shard (or the shuffle buffer), never by the corpus size.

A corpus that runs out before the tokens asked for is never a silent "complete" cache: below
MIN_TOKEN_FRACTION of them the harvest fails (`NotEnoughData`, one line naming the setting and the data);
above it logs a warning with the count. Either way the manifest records requested_tokens, the real
n_tokens and corpus_exhausted.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from rich.progress import BarColumn, TextColumn, TimeElapsedColumn
from torch import Tensor

from latentdiff.config import DataConfig, HarvestConfig
from latentdiff.core import distributed as dist
from latentdiff.core.cache import Manifest, ShardWriter, iter_shards, read_manifest, save_stats
from latentdiff.core.data import ContextBatch, Split, iter_context_batches, valid_positions
from latentdiff.core.models import LoadedModel, forward_to_layer
from latentdiff.errors import ConfigError, NotEnoughData

log = logging.getLogger(__name__)

MIN_TOKEN_FRACTION = 0.5  # a corpus that gives fewer than this share of the tokens asked for is an error


def paired_activations(
    models: list[LoadedModel], batch: ContextBatch, layer: int, data: DataConfig
) -> tuple[Tensor, Tensor, Tensor, dict[str, int]]:
    """Rows [n, M, D] at the valid positions of a batch, with their (ctx, pos) and exclusions."""
    tokenizer = models[0].tokenizer
    mask, excluded = valid_positions(batch, tokenizer, data)  # [B, T]
    acts = torch.stack(
        [forward_to_layer(m, batch.input_ids, batch.attention_mask, layer).float().cpu() for m in models],
        dim=2,
    )  # [B, T, M, D]
    if data.exclude_sink_norm is not None:
        norms = acts.norm(dim=-1)  # [B, T, M]
        median = norms[mask].median(dim=0).values  # [M]
        sink = (norms > data.exclude_sink_norm * median).any(-1) & mask
        excluded["sink"] = int(sink.sum())
        mask &= ~sink
    b_idx, t_idx = mask.nonzero(as_tuple=True)
    return acts[b_idx, t_idx], batch.ctx_index[b_idx], t_idx, excluded  # [n, M, D], [n], [n]


def _counts(counts: dict[str, int]) -> str:
    """{'pad': 119967, 'bos': 4096} -> 'pad 119,967, bos 4,096' (no raw dicts in the log)."""
    return ", ".join(f"{k} {v:,}" for k, v in counts.items()) or "none"


def _progress() -> Any:
    """A rich bar on a terminal, periodic log lines otherwise (latentdiff/progress.py)."""
    from latentdiff.progress import progress

    return progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,}/{task.total:,} tok"),
        TimeElapsedColumn(),
        TextColumn("{task.fields[rate]}"),
    )


def harvest_to_cache(
    models: list[LoadedModel],
    layer: int,
    data: DataConfig,
    harvest: HarvestConfig,
    split: Split,
    n_tokens: int,
    out: Path,
    config_hash: str,
    show: bool = True,
    on_batch: Callable[[ContextBatch], None] | None = None,
) -> Manifest:
    """Harvest a split into a sharded cache at `out` (skips if complete, resumes if partial).

    on_batch: called with every token batch the harvest reads, in order, from the resume point on (the
    held-out split's token ids are kept from these, instead of tokenizing the split a second time).
    """
    manifest = read_manifest(out)
    if manifest is not None and manifest.config_hash != config_hash:
        raise ConfigError(f"{out} holds a cache made with other settings; remove it or use another run dir")
    if manifest is not None and manifest.complete:
        return manifest
    if manifest is None:
        manifest = Manifest(
            models=[m.spec.name for m in models],
            layer=layer,
            d_model=models[0].d_model,
            dtype=harvest.cache_dtype,
            n_contexts=-1,
            ctx_len=data.ctx_len,
            config_hash=config_hash,
        )
    manifest.requested_tokens = n_tokens
    if dist.is_distributed():
        return _harvest_ranks(models, layer, data, harvest, split, n_tokens, out, manifest, show, on_batch)
    writer = ShardWriter(out, manifest, harvest.shard_tokens)
    start_ctx = manifest.next_context
    done = manifest.n_tokens
    t0 = time.perf_counter()
    seen, ctx_end = 0, start_ctx
    with _progress() as progress:
        task = progress.add_task(f"harvest {split}", total=n_tokens, completed=done, rate="")
        progress.disable = not show
        batches = iter_context_batches(
            models[0].tokenizer, data, split, harvest.batch_size, n_tokens=10**15, start_ctx=start_ctx
        )
        for batch in batches:
            if done >= n_tokens:
                break
            if on_batch is not None:
                on_batch(batch)
            rows, ctx, pos, excluded = paired_activations(models, batch, layer, data)
            for k, v in excluded.items():
                manifest.excluded[k] = manifest.excluded.get(k, 0) + v
            ctx_end = int(batch.ctx_index[-1]) + 1
            writer.add(rows, ctx, pos, ctx_end=ctx_end)
            done += rows.shape[0]
            seen += int(batch.attention_mask.sum())
            rate = seen / (time.perf_counter() - t0)
            progress.update(task, completed=min(done, n_tokens), rate=f"{rate:,.0f} tok/s")
        writer.flush(ctx_end=ctx_end)  # the last partial shard (no-op when empty)
    _check_enough(manifest, n_tokens, data, split, writer)
    manifest.n_contexts = manifest.next_context
    manifest.complete = True
    writer.write_manifest()
    log.info(
        "harvested %s: %s tokens in %d shards (excluded %s), %.0f context-tok/s",
        split,
        f"{manifest.n_tokens:,}",
        len(manifest.shards),
        _counts(manifest.excluded),
        seen / (time.perf_counter() - t0),
    )
    return manifest


def _harvest_ranks(
    models: list[LoadedModel],
    layer: int,
    data: DataConfig,
    harvest: HarvestConfig,
    split: Split,
    n_tokens: int,
    out: Path,
    manifest: Manifest,
    show: bool,
    on_batch: Callable[[ContextBatch], None] | None = None,
) -> Manifest:
    """`harvest_to_cache` over torchrun ranks: batch i of the split goes to rank i % world.

    Ranks advance in rounds of `world` batches and exchange each batch's row count, so every rank
    keeps exactly the batches one process would (those begun before n_tokens rows were reached).
    When any rank has a full shard buffered, every rank writes its buffer as one shard ending at the
    round's last context (a commit); rank 0 then lists the commit's shards in the one manifest. A
    commit covers every context before its ctx_end, so a killed harvest resumes after the last
    commit, on any number of ranks. Every rank holds the same manifest; only rank 0 writes it.
    """
    world, me = dist.world_size(), dist.rank()
    writer = ShardWriter(out, manifest, harvest.shard_tokens)
    done, commit_start = manifest.n_tokens, manifest.next_context
    pending = [0] * world  # rows buffered per rank, known to every rank
    batches = iter_context_batches(
        models[0].tokenizer, data, split, harvest.batch_size, n_tokens=10**15, start_ctx=commit_start
    )
    dist.barrier()  # every rank has read the manifest before rank 0 may rewrite it
    t0, seen, round_end = time.perf_counter(), 0, commit_start
    with _progress() as progress:
        task = progress.add_task(f"harvest {split} x{world}", total=n_tokens, completed=done, rate="")
        progress.disable = not (show and dist.is_main())
        finished = False
        while not finished:
            group = list(itertools.islice(batches, world))  # this round's batches, one per rank
            mine = paired_activations(models, group[me], layer, data) if me < len(group) else None
            counts = dist.all_gather_object((mine[0].shape[0], mine[3]) if mine is not None else None)
            for j, batch in enumerate(group):  # in batch order, as one process would
                if done >= n_tokens:
                    break
                if on_batch is not None:
                    on_batch(batch)
                n_rows, excluded = counts[j]
                for k, v in excluded.items():
                    manifest.excluded[k] = manifest.excluded.get(k, 0) + v
                if j == me and mine is not None:
                    writer.add(mine[0], mine[1], mine[2], ctx_end=None)
                done += n_rows
                pending[j] += n_rows
                seen += int(batch.attention_mask.sum())
                round_end = int(batch.ctx_index[-1]) + 1
            finished = done >= n_tokens or len(group) < world
            if finished or max(pending) >= harvest.shard_tokens:
                _commit(writer, pending, commit_start, round_end)
                commit_start = round_end
            rate = seen / (time.perf_counter() - t0)
            progress.update(task, completed=min(done, n_tokens), rate=f"{rate:,.0f} tok/s")
    _check_enough(manifest, n_tokens, data, split, writer if dist.is_main() else None)
    manifest.n_contexts = manifest.next_context
    manifest.complete = True
    if dist.is_main():
        writer.write_manifest()
    dist.barrier()
    log.info(
        "harvested %s on %d ranks: %s tokens in %d shards (excluded %s), %.0f context-tok/s",
        split,
        world,
        f"{manifest.n_tokens:,}",
        len(manifest.shards),
        _counts(manifest.excluded),
        seen / (time.perf_counter() - t0),
    )
    return manifest


def _check_enough(
    manifest: Manifest, n_tokens: int, data: DataConfig, split: Split, writer: ShardWriter | None
) -> None:
    """Record a corpus that ran out in the manifest; fail below MIN_TOKEN_FRACTION, else warn with the count."""
    got = manifest.n_tokens
    if got >= n_tokens:
        return
    manifest.corpus_exhausted = True
    key = "data.n_tokens" if split == "train" else "data.n_heldout_tokens"
    where = {"organism": "the organism corpus", "hf": f"data.id {data.id!r} (split {data.split or 'train'!r})"}.get(
        data.source, f"data.paths {data.paths}"
    )
    if data.max_docs:
        where += f" (data.max_docs={data.max_docs})"
    if got < MIN_TOKEN_FRACTION * n_tokens:
        if writer is not None:
            writer.write_manifest()  # left incomplete: the cache is not usable
        raise NotEnoughData(
            f"{key}={n_tokens}: {where} gave only {got} {split} tokens (< {MIN_TOKEN_FRACTION:.0%} of what was "
            f"asked); add documents or lower {key}"
        )
    log.warning("%s=%d: %s ran out after %d %s tokens (%.0f%% of what was asked); the cache holds %d",
                key, n_tokens, where, got, split, 100 * got / n_tokens, got)


def _commit(writer: ShardWriter, pending: list[int], ctx_start: int, ctx_end: int) -> None:
    """Every rank writes its buffered rows as one shard; rank 0 lists them all in the manifest."""
    me = dist.rank()
    info = None
    if pending[me]:
        idx = len(writer.manifest.shards) + sum(1 for n in pending[:me] if n)  # rank order within a commit
        info = writer.write_shard(idx, ctx_start, ctx_end)
    infos = dist.all_gather_object(info)  # also: every shard file exists before the manifest names it
    writer.manifest.shards.extend(i for i in infos if i is not None)
    if dist.is_main():
        writer.write_manifest()
    pending[:] = [0] * len(pending)


def normalization_stats(batches: Iterable[Tensor], target_rms: float = 1.0) -> tuple[Tensor, Tensor]:
    """Per-model mean [M, D] and scale [M] so that normalised rows have RMS `target_rms` per dim.

    x' = (x - mean^m) * scale^m with scale^m = target_rms * sqrt(D / sum_d var_d^m); one pass over
    batches [n, M, D] in float64, holding only running sums (bounded memory).
    """
    total = sq = None
    n = 0
    for batch in batches:
        acts = batch.double()  # [n, M, D]
        total = acts.sum(0) if total is None else total + acts.sum(0)
        sq = acts.pow(2).sum(0) if sq is None else sq + acts.pow(2).sum(0)
        n += acts.shape[0]
    assert total is not None and sq is not None and n > 1, "no activations to compute statistics from"
    mean = total / n  # [M, D]
    var = (sq / n - mean.pow(2)).clamp_min(0)  # [M, D]
    scale = target_rms * (mean.shape[1] / var.sum(-1)).sqrt()  # [M]
    return mean.float(), scale.float()


def compute_stats(cache_dir: Path, target_rms: float = 1.0) -> tuple[Tensor, Tensor]:
    """`normalization_stats` over a cache's shards, saved as stats.safetensors in the cache dir."""
    mean, scale = normalization_stats((shard["acts"] for shard in iter_shards(cache_dir)), target_rms)
    save_stats(cache_dir, mean, scale)
    return mean, scale


def stream_batches(
    models: list[LoadedModel],
    layer: int,
    data: DataConfig,
    harvest: HarvestConfig,
    batch_size: int,
    seed: int,
) -> Iterator[Tensor]:
    """Endless shuffled batches [batch, M, D] harvested on the fly through a shuffle buffer.

    The buffer holds `harvest.shuffle_buffer_tokens` rows; each yielded batch is drawn uniformly
    from it and its slots are refilled with fresh rows. The corpus (data.n_tokens) is cycled.
    The order is a pure function of the seed, so a resumed run replays to its position.
    """
    gen = torch.Generator().manual_seed(seed)
    capacity = harvest.shuffle_buffer_tokens
    buffer: Tensor | None = None
    filled = 0

    def rows_forever() -> Iterator[Tensor]:
        while True:
            for batch in iter_context_batches(
                models[0].tokenizer, data, "train", harvest.batch_size, data.n_tokens
            ):
                yield paired_activations(models, batch, layer, data)[0]

    source = rows_forever()
    pending: list[Tensor] = []
    pending_n = 0

    def take(n: int) -> Tensor:
        nonlocal pending, pending_n
        while pending_n < n:
            rows = next(source)
            pending.append(rows)
            pending_n += rows.shape[0]
        cat = torch.cat(pending)
        out, rest = cat[:n], cat[n:]
        pending, pending_n = [rest], rest.shape[0]
        return out

    while True:
        if buffer is None:
            first = take(capacity)  # [capacity, M, D]
            buffer = first.clone()
            filled = capacity
        idx = torch.randperm(filled, generator=gen)[:batch_size]
        yield buffer[idx].clone()
        buffer[idx] = take(idx.numel())
