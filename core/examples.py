"""delphi-style example sampling per latent, streaming with bounded memory.

Contexts are cut into non-overlapping `window`-token windows (delphi's constructor); a window's
value for a latent is its max activation. In one pass over the held-out cache, per selected latent:
  - top: the n_top windows with the highest value (running top-k),
  - quantile pool: a uniform sample (random-priority reservoir) of activating windows, later split
    into n_quantiles equal slices by value with n_per_quantile drawn from each,
  - negatives: a uniform sample of windows where the latent never fires.
Memory is [n_latents, pool] per pass, never the activation matrix. A second pass fills in the
per-token activations of the chosen windows. Source: EleutherAI/delphi (constructors.py,
samplers.py); shared METHOD.md section 5.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, Field
from torch import Tensor

from latentdiff.config import SamplingConfig
from latentdiff.core.cache import iter_shards
from latentdiff.core.crosscoder import CrossCoder
from latentdiff.io import atomic_write

POOL = 256  # activating windows kept per latent for quantile sampling


class Example(BaseModel):
    """One context window shown for a latent (a record that crosses into the store and agent)."""

    latent: int = Field(description="Latent id.")
    kind: Literal["top", "quantile", "negative"] = Field(description="How it was sampled.")
    quantile: int | None = Field(default=None, description="Quantile bucket (0 = lowest).")
    ctx: int = Field(description="Held-out context index.")
    start: int = Field(description="First token position of the window in its context.")
    tokens: list[str] = Field(description="Decoded tokens of the window.")
    activations: list[float] = Field(description="Latent activation per token (0 where silent).")
    max_act: float = Field(description="Max activation in the window.")
    doc_id: int = Field(description="Source document id (for document-level bootstrap).")
    category: str | None = Field(
        default=None, description="Organism stream (ground truth; never shown to judges)."
    )

    def marked_text(self, threshold: float = 0.3) -> str:
        """Text with tokens above threshold * max marked <<like this>> (delphi's explainer format)."""
        if self.max_act <= 0:
            return "".join(self.tokens)
        cut = threshold * self.max_act
        out, inside = [], False
        for tok, a in zip(self.tokens, self.activations):
            hot = a > cut
            if hot and not inside:
                out.append("<<")
            if not hot and inside:
                out.append(">>")
            out.append(tok)
            inside = hot
        if inside:
            out.append(">>")
        return "".join(out)


def _keep_top(
    vals: Tensor, keys: Tensor, new_vals: Tensor, new_keys: Tensor, n: int
) -> tuple[Tensor, Tensor]:
    """Merge running [S, n] (value, key) with new [S, W] and keep the n largest values per row."""
    all_vals = torch.cat([vals, new_vals], dim=1)
    all_keys = torch.cat([keys, new_keys], dim=1)
    top = all_vals.topk(min(n, all_vals.shape[1]), dim=1)
    return top.values, all_keys.gather(1, top.indices)


@torch.no_grad()
def window_values(
    cc: CrossCoder,
    shard: dict[str, Tensor],
    latents: Tensor,
    ctx_len: int,
    window: int,
    cols: list[int] | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per-token activations of the latents and per-window maxima for one shard.

    `cols` picks the crosscoder's models out of the cache's M axis (None = all).
    Returns f [n, S] (token rows), row window keys [n], unique window keys [W], window max [W, S].
    """
    acts = shard["acts"] if cols is None else shard["acts"][:, cols]  # [n, M, D]
    f = cc.encode_latents(cc.normalize(acts.float()), latents)  # [n, S]
    per_ctx = -(-ctx_len // window)
    keys = shard["ctx"].long() * per_ctx + shard["pos"].long() // window  # [n]
    uniq, inverse = torch.unique(keys, return_inverse=True)
    wmax = torch.zeros(len(uniq), f.shape[1]).scatter_reduce(
        0, inverse[:, None].expand_as(f), f, reduce="amax", include_self=True
    )  # [W, S]
    return f, keys, uniq, wmax


def sample_windows(
    cc: CrossCoder,
    cache_dir: Path,
    latents: list[int],
    ctx_len: int,
    cfg: SamplingConfig,
    seed: int,
    cols: list[int] | None = None,
) -> dict[int, list[tuple[str, int | None, int]]]:
    """Pass 1: choose windows per latent -> {latent: [(kind, quantile, window_key), ...]}."""
    S, lat = len(latents), torch.tensor(latents, dtype=torch.long)
    gen = torch.Generator().manual_seed(seed)
    neg_inf = float("-inf")
    top_v, top_k = torch.full((S, 0), neg_inf), torch.zeros((S, 0), dtype=torch.long)
    pool_p, pool_k = torch.full((S, 0), neg_inf), torch.zeros((S, 0), dtype=torch.long)
    pool_v = torch.zeros((S, 0))
    neg_p, neg_k = torch.full((S, 0), neg_inf), torch.zeros((S, 0), dtype=torch.long)
    for shard in iter_shards(cache_dir, keys=("acts", "ctx", "pos")):
        _, _, uniq, wmax = window_values(cc, shard, lat, ctx_len, cfg.window, cols)
        wmax_t = wmax.T  # [S, W]
        keys = uniq[None].expand(S, -1)  # [S, W]
        active = wmax_t > 0
        top_v, top_k = _keep_top(top_v, top_k, torch.where(active, wmax_t, neg_inf), keys, cfg.n_top)
        prio = torch.rand(wmax_t.shape, generator=gen)
        p_act = torch.where(active, prio, neg_inf)
        merged_p = torch.cat([pool_p, p_act], 1)
        top = merged_p.topk(min(POOL, merged_p.shape[1]), dim=1)
        pool_k = torch.cat([pool_k, keys], 1).gather(1, top.indices)
        pool_v = torch.cat([pool_v, wmax_t], 1).gather(1, top.indices)
        pool_p = top.values
        neg_p, neg_k = _keep_top(neg_p, neg_k, torch.where(active, neg_inf, prio), keys, cfg.n_negative)
    rng = np.random.default_rng(seed)
    chosen: dict[int, list[tuple[str, int | None, int]]] = {}
    for i, j in enumerate(latents):
        picks: list[tuple[str, int | None, int]] = []
        top_keys = [int(k) for v, k in zip(top_v[i].tolist(), top_k[i].tolist()) if v > neg_inf]
        picks += [("top", None, k) for k in top_keys]
        valid = pool_p[i] > neg_inf
        vals, keys_i = pool_v[i][valid].numpy(), pool_k[i][valid].numpy()
        order = np.argsort(vals, kind="stable")
        for q, bucket in enumerate(np.array_split(order, cfg.n_quantiles)):
            if len(bucket):
                take = rng.choice(bucket, size=min(cfg.n_per_quantile, len(bucket)), replace=False)
                picks += [("quantile", q, int(keys_i[t])) for t in take]
        picks += [
            ("negative", None, int(k)) for p, k in zip(neg_p[i].tolist(), neg_k[i].tolist()) if p > neg_inf
        ]
        chosen[j] = picks
    return chosen


REPLACEMENT = "\ufffd"
MAX_CHAR_PIECES = 4  # a UTF-8 character spans at most 4 bytes, so at most 4 byte-level tokens


def decode_pieces(tokenizer: Any, ids: list[int]) -> list[str]:
    """One text piece per token id, with characters split over byte-level tokens kept whole.

    Decoding token by token turns a character whose UTF-8 bytes fall into two tokens (Cyrillic,
    CJK, emoji in byte-level BPE) into two replacement characters. Where a token's own decode holds
    one, the tokens are decoded together until the character is complete: the completing token
    carries the whole character and the tokens before it an empty piece, so pieces stay aligned
    with the ids (and their activations). A real U+FFFD in the text ends a group after 4 tokens.
    """
    pieces = [tokenizer.decode([t]) for t in ids]
    if not any(REPLACEMENT in p for p in pieces):
        return pieces
    out: list[str] = []
    start = 0  # first token of the group being completed
    for i in range(len(ids)):
        if start == i and REPLACEMENT not in pieces[i]:
            out.append(pieces[i])
            start = i + 1
            continue
        text = tokenizer.decode(ids[start : i + 1])
        if text.endswith(REPLACEMENT) and i + 1 < len(ids) and i + 1 - start < MAX_CHAR_PIECES:
            out.append("")  # incomplete character: wait for the next token
            continue
        out.append(text)
        start = i + 1
    return out


def build_examples(
    cc: CrossCoder,
    cache_dir: Path,
    latents: list[int],
    contexts: np.ndarray,
    docs: list[dict[str, Any]],
    tokenizer: Any,
    cfg: SamplingConfig,
    seed: int = 22,
    cols: list[int] | None = None,
) -> Iterator[Example]:
    """Both passes: yield every Example of every latent (decoded, with per-token activations)."""
    ctx_len = contexts.shape[1]
    per_ctx = -(-ctx_len // cfg.window)
    chosen = sample_windows(cc, cache_dir, latents, ctx_len, cfg, seed, cols)
    key_latents: dict[int, set[int]] = {}
    for j, picks in chosen.items():
        for _, _, k in picks:
            key_latents.setdefault(k, set()).add(j)
    need = torch.tensor(sorted(key_latents), dtype=torch.long)
    lat_index = {j: i for i, j in enumerate(latents)}
    acts: dict[int, dict[int, np.ndarray]] = {}  # window key -> latent -> [window] activations
    lat = torch.tensor(latents, dtype=torch.long)
    for shard in iter_shards(cache_dir, keys=("acts", "ctx", "pos")):
        f, keys, _, _ = window_values(cc, shard, lat, ctx_len, cfg.window, cols)
        for row in torch.isin(keys, need).nonzero().squeeze(1).tolist():
            key = int(keys[row])
            offset = int(shard["pos"][row]) % cfg.window
            store = acts.setdefault(key, {})
            for j in key_latents[key]:
                store.setdefault(j, np.zeros(cfg.window, dtype=np.float32))[offset] = float(
                    f[row, lat_index[j]]
                )
    cache: dict[int, list[str]] = {}
    for j, picks in chosen.items():
        for kind, q, key in picks:
            ctx, w = divmod(key, per_ctx)
            start = w * cfg.window
            ids = contexts[ctx, start : start + cfg.window]
            ids = ids[ids >= 0]
            if key not in cache:
                cache[key] = decode_pieces(tokenizer, [int(t) for t in ids])
            window_acts = acts.get(key, {}).get(j, np.zeros(cfg.window, dtype=np.float32))[: len(ids)]
            yield Example(
                latent=j,
                kind=kind,
                quantile=q,
                ctx=ctx,
                start=start,
                tokens=cache[key],
                activations=[round(float(a), 4) for a in window_acts],
                max_act=round(float(window_acts.max(initial=0.0)), 4),
                doc_id=int(docs[ctx]["doc_id"]),
                category=docs[ctx].get("category"),
            )


def write_examples(examples: Iterator[Example], path: Path) -> int:
    """Write examples as gzipped JSONL atomically; return the count."""
    count = 0

    def writer(p: Path) -> None:
        nonlocal count
        with gzip.open(p, "wt", encoding="utf-8") as fh:
            for ex in examples:
                fh.write(ex.model_dump_json() + "\n")
                count += 1

    atomic_write(Path(path), writer)
    return count


def read_examples(path: Path) -> Iterator[Example]:
    """Stream examples back as typed records."""
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            yield Example(**json.loads(line))


def special_token_strings(tokenizer: Any) -> set[str]:
    """Decoded strings of the tokenizer's special tokens (BOS/EOS/pad and added special tokens such as
    chat role and turn markers): the scaffolding a chat template puts around text."""
    out = set(tokenizer.all_special_tokens)
    for tok in getattr(tokenizer, "added_tokens_decoder", {}).values():
        if getattr(tok, "special", False):
            out.add(str(tok.content))
    return {s for s in out if s}


class ScaffoldTally:
    """Per latent: the share of its activation mass (top and quantile examples) on special tokens."""

    def __init__(self, special: set[str]) -> None:
        self.special = special
        self.on: dict[int, float] = {}
        self.total: dict[int, float] = {}

    def add(self, ex: Example) -> Example:
        """Count one example (negatives carry no activation) and pass it through."""
        if ex.kind != "negative":
            acts = np.clip(np.asarray(ex.activations, dtype=np.float64), 0, None)  # [window]
            hot = np.array([t in self.special for t in ex.tokens], dtype=bool)
            self.on[ex.latent] = self.on.get(ex.latent, 0.0) + float(acts[hot].sum())
            self.total[ex.latent] = self.total.get(ex.latent, 0.0) + float(acts.sum())
        return ex

    def shares(self) -> dict[int, float]:
        """latent -> share of activation mass on special tokens (0 for a latent with no mass)."""
        return {j: (self.on[j] / t if t > 0 else 0.0) for j, t in self.total.items()}


def scaffold_path(examples_path: Path) -> Path:
    """Where the scaffold shares of an examples file are written (NAME.scaffold.json)."""
    return examples_path.with_name(examples_path.name.split(".")[0] + ".scaffold.json")


def read_scaffold(examples_dir: Path) -> dict[str, float]:
    """'crosscoder:latent' -> scaffold share, for every examples file in the directory."""
    out: dict[str, float] = {}
    for path in sorted(Path(examples_dir).glob("*.scaffold.json")):
        name = path.name[: -len(".scaffold.json")]
        out.update({f"{name}:{j}": float(v) for j, v in json.loads(path.read_text()).items()})
    return out
