"""Sharded on-disk activation cache and shuffled streams over it (bounded memory).

Layout of a cache directory:
    manifest.json              shards done so far (atomic rewrite after each shard)
    shard_00000.safetensors    acts [n, M, D] (bf16 by default), ctx [n] int32, pos [n] int32
    stats.safetensors          per-model mean [M, D] and scale [M] for normalisation
A shard is written to a temp file and renamed, then the manifest is rewritten: after kill -9 the
manifest lists only complete shards, and harvesting resumes at the next context.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, Field, computed_field
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from latentdiff.errors import CorruptFile, NotEnoughData
from latentdiff.io import atomic_write, atomic_write_json, read_model


class ShardInfo(BaseModel):
    """One complete shard."""

    file: str = Field(description="File name inside the cache dir.")
    n_tokens: int = Field(description="Token rows in the shard.")
    ctx_start: int = Field(description="First context index covered.")
    ctx_end: int = Field(description="One past the last context index covered.")


class Manifest(BaseModel):
    """What a cache holds."""

    models: list[str] = Field(description="Model names, in the M axis order.")
    layer: int = Field(description="Captured block.")
    d_model: int = Field(description="Activation width.")
    dtype: str = Field(description="Storage dtype.")
    n_contexts: int = Field(description="Contexts planned for this cache.")
    ctx_len: int = Field(description="Tokens per context.")
    shards: list[ShardInfo] = Field(default_factory=list, description="Complete shards.")
    excluded: dict[str, int] = Field(default_factory=dict, description="Excluded positions by reason.")
    config_hash: str = Field(default="", description="Hash of the settings that produced the cache.")
    complete: bool = Field(default=False, description="All planned contexts harvested.")
    requested_tokens: int | None = Field(
        default=None, description="Token rows asked for (data.n_tokens / n_heldout_tokens); None in older caches."
    )
    corpus_exhausted: bool = Field(
        default=False, description="The corpus ran out before requested_tokens (n_tokens says how many came)."
    )

    @computed_field(description="Token rows over all shards (what the cache really holds).")  # type: ignore[prop-decorator]
    @property
    def n_tokens(self) -> int:
        """Token rows over all shards."""
        return sum(s.n_tokens for s in self.shards)

    @property
    def next_context(self) -> int:
        """First context not yet in a shard."""
        return self.shards[-1].ctx_end if self.shards else 0


def read_manifest(directory: Path) -> Manifest | None:
    """The manifest of a cache dir, or None if there is none."""
    path = Path(directory) / "manifest.json"
    return read_model(path, Manifest, "cache manifest") if path.is_file() else None


class ShardWriter:
    """Accumulate harvested rows and write fixed-size shards atomically."""

    def __init__(self, directory: Path, manifest: Manifest, shard_tokens: int) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.manifest = manifest
        self.shard_tokens = shard_tokens
        self.dtype = getattr(torch, manifest.dtype)
        self._acts: list[Tensor] = []
        self._ctx: list[Tensor] = []
        self._pos: list[Tensor] = []
        self._n = 0

    def add(self, acts: Tensor, ctx: Tensor, pos: Tensor, ctx_end: int | None) -> None:
        """Add rows acts [n, M, D] from contexts < ctx_end; flush when a shard is full.

        Shards end on context boundaries, so `ctx_end` is where a resumed harvest restarts.
        ctx_end None: only buffer (the caller decides when to write, as the distributed harvest does).
        """
        self._acts.append(acts.to("cpu", self.dtype))
        self._ctx.append(ctx.to(torch.int32).cpu())
        self._pos.append(pos.to(torch.int32).cpu())
        self._n += acts.shape[0]
        if ctx_end is not None and self._n >= self.shard_tokens:
            self.flush(ctx_end)

    def flush(self, ctx_end: int) -> None:
        """Write buffered rows as one shard and record it in the manifest."""
        if self._n == 0:
            return
        info = self.write_shard(len(self.manifest.shards), self.manifest.next_context, ctx_end)
        self.manifest.shards.append(info)
        self.write_manifest()

    def write_shard(self, idx: int, ctx_start: int, ctx_end: int) -> ShardInfo:
        """Write the buffered rows as shard number `idx` and empty the buffer; the manifest is untouched.

        Distributed harvest: every rank writes its own shard this way and rank 0 records them all.
        """
        tensors = {
            "acts": torch.cat(self._acts).contiguous(),  # [n, M, D]
            "ctx": torch.cat(self._ctx).contiguous(),  # [n]
            "pos": torch.cat(self._pos).contiguous(),  # [n]
        }
        name = f"shard_{idx:05d}.safetensors"
        atomic_write(self.dir / name, lambda p: save_file(tensors, str(p)))
        info = ShardInfo(file=name, n_tokens=self._n, ctx_start=ctx_start, ctx_end=ctx_end)
        self._acts, self._ctx, self._pos, self._n = [], [], [], 0
        return info

    def write_manifest(self) -> None:
        """Atomically rewrite manifest.json."""
        atomic_write_json(self.dir / "manifest.json", self.manifest.model_dump())


def load_shard(directory: Path, info: ShardInfo, keys: tuple[str, ...] = ("acts",)) -> dict[str, Tensor]:
    """Load some tensors of one shard (a missing, truncated or foreign shard: `CorruptFile` naming it)."""
    return _read_tensors(Path(directory) / info.file, keys, "activation cache shard")


def _read_tensors(path: Path, keys: tuple[str, ...], what: str) -> dict[str, Tensor]:
    try:
        with safe_open(str(path), framework="pt") as fh:
            return {k: fh.get_tensor(k) for k in keys}
    except FileNotFoundError:
        raise CorruptFile(f"{path}: missing {what}; harvest again (e.g. `--from harvest`)") from None
    except (SafetensorError, OSError, RuntimeError, KeyError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CorruptFile(f"{path}: unreadable {what} ({first}); harvest again (e.g. `--from harvest`)") from None


def iter_shards(directory: Path, keys: tuple[str, ...] = ("acts",)) -> Iterator[dict[str, Tensor]]:
    """Every shard in order (one in memory at a time)."""
    manifest = read_manifest(directory)
    if manifest is None:
        raise FileNotFoundError(f"no activation cache in {directory}")
    for info in manifest.shards:
        yield load_shard(directory, info, keys)


class ShuffledStream:
    """Endless shuffled batches from a cache: shards in a seeded order, rows shuffled within a
    window of `window_shards` shards. Batch i is a pure function of (seed, i), so a resumed run
    continues with the same data order (`start` skips without loading skipped shards' data)."""

    def __init__(self, directory: Path, batch_size: int, seed: int, window_shards: int = 4) -> None:
        manifest = read_manifest(directory)
        if manifest is None or not manifest.shards:
            raise FileNotFoundError(f"no activation shards in {directory}")
        self.dir = Path(directory)
        self.shards = manifest.shards
        self.batch_size = batch_size
        self.seed = seed
        self.window = max(1, window_shards)
        # Rows are shuffled within a window and a window's leftover rows are dropped: if even the
        # largest window cannot fill one batch, no batch ever comes (the stream would spin forever).
        sizes = sorted((s.n_tokens for s in self.shards), reverse=True)
        fullest = sum(sizes[: self.window])
        if fullest < batch_size:
            raise NotEnoughData(
                f"crosscoder.batch_size={batch_size} cannot be filled from the activation cache {self.dir}: "
                f"it holds {sum(sizes)} rows in {len(sizes)} shards, shuffled within windows of {self.window} "
                f"shards (at most {fullest} rows); lower crosscoder.batch_size to <= {fullest} or harvest more "
                f"(data.n_tokens, harvest.shard_tokens)"
            )

    def _windows(self, epoch: int) -> list[list[int]]:
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.shards)).tolist()
        return [order[i : i + self.window] for i in range(0, len(order), self.window)]

    def batches(self, start: int = 0) -> Iterator[Tensor]:
        """Yield float32 batches [batch, M, D] forever, beginning at global batch index `start`.

        Rows left over at the end of a window are dropped (each window yields floor(n/B) batches).
        """
        index, epoch = 0, 0
        while True:
            for w, window in enumerate(self._windows(epoch)):
                n_rows = sum(self.shards[i].n_tokens for i in window)
                n_batches = n_rows // self.batch_size
                if index + n_batches <= start:
                    index += n_batches
                    continue
                acts = torch.cat([load_shard(self.dir, self.shards[i])["acts"] for i in window])
                perm = torch.from_numpy(np.random.default_rng([self.seed, epoch, w, 1]).permutation(n_rows))
                for b in range(n_batches):
                    if index >= start:
                        rows = perm[b * self.batch_size : (b + 1) * self.batch_size]
                        yield acts[rows].float()
                    index += 1
            epoch += 1


def save_stats(directory: Path, mean: Tensor, scale: Tensor) -> None:
    """Normalisation statistics: mean [M, D], scale [M]."""
    atomic_write(
        Path(directory) / "stats.safetensors",
        lambda p: save_file({"mean": mean.contiguous(), "scale": scale.contiguous()}, str(p)),
    )


def load_stats(directory: Path) -> tuple[Tensor, Tensor]:
    """(mean [M, D], scale [M]) saved by `save_stats`."""
    t = _read_tensors(Path(directory) / "stats.safetensors", ("mean", "scale"), "normalisation statistics file")
    return t["mean"], t["scale"]
