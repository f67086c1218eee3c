"""What a latent does to each model's output: logit lens of its decoder directions, and an ablation.

Two measurements per latent, for the latent pages (what researchers look for on Neuronpedia):
- **Logit lens.** The latent's decoder vector for model m, d_j^m (crosscoder space), is mapped back
  to model m's residual stream (divided by the model's normalisation scale: x' = (x - mean) * s, so
  a direction v in crosscoder space is v / s in the model's units), through the model's final norm
  gain (RMSNorm weight; Gemma's 1 + weight) and its unembedding W_U: logits = W_U (g * d / s). The
  tokens with the largest and smallest logits are the ones the direction promotes and suppresses
  (nostalgebraist's logit lens applied to a dictionary direction, as Neuronpedia's "top logits").
- **Ablation.** On the latent's top contexts, model m runs twice: as is, and with the latent's
  decoder contribution f_j(x) d_j^m / s_m removed from the residual stream after block `layer` at
  every position where the latent fires (f_j from the crosscoder's inference rule on all models'
  activations at that position, read from the held-out cache the examples came from, so the ablation
  fires exactly where the examples say the latent does; BOS and padding have no cache row and are never
  ablated). The effect is the mean change of the next-token loss (nats) and
  the mean KL(clean || ablated) over those positions: a causal check that the direction matters
  to the model's predictions where the latent is active. Rows of several latents share a batch:
  each row subtracts its own latent's contribution.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from latentdiff.core.crosscoder import CrossCoder
from latentdiff.core.models import LoadedModel, forward_to_layer
from latentdiff.records import Ablation, Histogram, Lens, LensToken


def unembedding(m: LoadedModel) -> tuple[Tensor, Tensor | None]:
    """(W_U [vocab, d_model], final-norm gain [d_model] or None) of a HF causal LM."""
    head = m.model.get_output_embeddings()
    if head is None:
        raise ValueError(f"model {m.spec.name!r} has no output embeddings")
    W_U = head.weight.detach().float()  # [V, D]
    norm = None
    for path in ("model.norm", "model.final_layernorm", "transformer.ln_f", "gpt_neox.final_layer_norm",
                 "model.decoder.final_layer_norm"):
        obj: Any = m.model
        try:
            for part in path.split("."):
                obj = getattr(obj, part)
        except AttributeError:
            continue
        norm = obj
        break
    gain = None
    if norm is not None and getattr(norm, "weight", None) is not None:
        gain = norm.weight.detach().float()  # [D]
        if "gemma" in type(norm).__name__.lower():  # Gemma's RMSNorm scales by (1 + weight)
            gain = 1.0 + gain
    return W_U, gain


@torch.no_grad()
def logit_lens(cc: CrossCoder, latents: list[int], col: int, W_U: Tensor, gain: Tensor | None,
               tokenizer: Any, k: int = 10) -> dict[int, Lens]:
    """latent -> tokens promoted and suppressed by its decoder direction for crosscoder column `col`."""
    if not latents:
        return {}
    d = cc.decoder()[latents, col].float() / cc.act_scale[col].float()  # [L, D] in the model's units
    if gain is not None:
        d = d * gain.to(d.device)
    d = d / d.norm(dim=-1, keepdim=True).clamp_min(1e-12)  # unit directions: logits comparable across latents
    logits = d @ W_U.to(d.device).T  # [L, V]
    top = logits.topk(k, dim=-1)
    bottom = (-logits).topk(k, dim=-1)

    def tokens(ids: Tensor, vals: Tensor) -> list[LensToken]:
        return [LensToken(token=tokenizer.decode([int(i)]), logit=round(float(v), 4)) for i, v in zip(ids, vals)]

    return {j: Lens(promoted=tokens(top.indices[r], top.values[r]),
                    suppressed=tokens(bottom.indices[r], -bottom.values[r]))
            for r, j in enumerate(latents)}


@contextmanager
def _subtract_at(block: nn.Module, delta: Tensor) -> Iterator[None]:
    """Subtract `delta` [B, T, D] from the block's output (the residual stream after it)."""

    def hook(_mod: nn.Module, _inp: Any, out: Any) -> Any:
        if isinstance(out, tuple):
            return (out[0] - delta.to(out[0].dtype), *out[1:])
        return out - delta.to(out.dtype)

    handle = block.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def _ids_and_mask(contexts: Tensor, pad_id: int) -> tuple[Tensor, Tensor]:
    """Held-out contexts use -1 for padding: ids with the pad id there, and the attention mask."""
    mask = (contexts >= 0).long()  # [B, T]
    return torch.where(contexts >= 0, contexts, torch.full_like(contexts, pad_id)), mask


@torch.no_grad()
def latent_codes(models: list[LoadedModel], cc: CrossCoder, layer: int, ids: Tensor, mask: Tensor,
                 latents: Tensor) -> Tensor:
    """f_j at every position [B, T, L] for the given latents, from every crosscoder model's activations."""
    x = torch.stack([forward_to_layer(m, ids, mask, layer).float().cpu() for m in models], dim=2)  # [B, T, M, D]
    B, T, M, D = x.shape
    pre = cc.encode_latents(cc.normalize(x.reshape(B * T, M, D)), latents)  # [B*T, L] the inference rule
    return (pre * mask.reshape(B * T, 1)).reshape(B, T, -1)


@torch.no_grad()
def cached_codes(cc: CrossCoder, shards: Iterator[dict[str, Tensor]], cols: list[int] | None,
                 rows: list[tuple[int, int]], ctx_len: int) -> Tensor:
    """f_j at every position of its context for each (latent, context) row  [R, T], from the held-out cache.

    The cache holds every model's activations at the tokens the sampler read (the same numbers the
    examples' activations came from); excluded tokens (BOS, padding) have no row and get f = 0. One
    pass over the shards ("acts", "ctx", "pos"), a [rows of the needed contexts, latents] matmul per shard.
    """
    out = torch.zeros(len(rows), ctx_len)  # [R, T]
    if not rows:
        return out
    lat = sorted({j for j, _ in rows})
    col_of = {j: i for i, j in enumerate(lat)}
    pair_ctx = torch.tensor([c for _, c in rows])  # [R]
    pair_lat = torch.tensor([col_of[j] for j, _ in rows])  # [R] column in `lat`
    order = torch.argsort(pair_ctx, stable=True)
    sorted_ctx = pair_ctx[order]  # [R]
    lat_t = torch.tensor(lat)
    for shard in shards:
        ctx = shard["ctx"].long()  # [n]
        idx = torch.isin(ctx, sorted_ctx).nonzero().squeeze(1)  # [r] rows of needed contexts
        if not idx.numel():
            continue
        acts = shard["acts"][idx] if cols is None else shard["acts"][idx][:, cols]  # [r, M, D]
        pre = cc.encode_latents(cc.normalize(acts.float()), lat_t)  # [r, L] the inference rule
        rc = ctx[idx]  # [r]
        lo = torch.searchsorted(sorted_ctx, rc)  # [r] first row (in ctx order) of each token's context
        n = torch.searchsorted(sorted_ctx, rc, right=True) - lo  # [r] rows sharing that context
        tok = torch.arange(len(idx)).repeat_interleave(n)  # [c] one entry per (token, row of its context)
        first = torch.cumsum(n, 0) - n  # [r]
        which = order[lo[tok] + torch.arange(len(tok)) - first[tok]]  # [c] the row index
        out[which, shard["pos"].long()[idx][tok]] = pre[tok, pair_lat[which]]
    return out


@torch.no_grad()
def ablation_effects(models: list[LoadedModel], cc: CrossCoder, layer: int, target: int,
                     rows: list[tuple[int, int]], contexts: Tensor, batch_size: int = 16,
                     codes: Tensor | None = None) -> dict[int, Ablation]:
    """latent -> effect on model `target` (a crosscoder column) of ablating it on its contexts.

    rows: (latent, held-out context index) pairs; contexts: [n_ctx, T] token ids (-1 = padding).
    codes: f [len(rows), T] per row (`cached_codes`); None = computed from every model's forward pass
    to the layer. Each distinct context runs clean once (its rows share the clean logits); each row
    runs ablated once, up to `batch_size` rows per forward pass.
    """
    m = models[target]
    pad = m.tokenizer.pad_token_id if m.tokenizer.pad_token_id is not None else 0
    device = next(m.model.parameters()).device
    by_ctx: dict[int, list[int]] = {}  # context -> indices into rows
    for r, (_, c) in enumerate(rows):
        by_ctx.setdefault(c, []).append(r)
    chunks: list[list[int]] = [[]]  # contexts per forward pass, their rows filling up to batch_size
    n_rows = 0
    for c in sorted(by_ctx):
        if chunks[-1] and n_rows + len(by_ctx[c]) > batch_size:
            chunks.append([])
            n_rows = 0
        chunks[-1].append(c)
        n_rows += len(by_ctx[c])
    sums: dict[int, list[float]] = {}
    for chunk in chunks:
        if not chunk:
            continue
        ids, mask = _ids_and_mask(contexts[chunk].long(), pad)  # [C, T]
        ridx = [r for c in chunk for r in by_ctx[c]]  # the chunk's rows
        at = torch.tensor([i for i, c in enumerate(chunk) for _ in by_ctx[c]])  # [B] each row's context in chunk
        js = torch.tensor([rows[r][0] for r in ridx])  # [B]
        if codes is None:
            uniq, inv = js.unique(return_inverse=True)
            f_all = latent_codes(models, cc, layer, ids, mask, uniq)  # [C, T, U]
            f = f_all[at, :, inv]  # [B, T]
        else:
            f = codes[ridx].to(torch.float32)  # [B, T]
        d = cc.decoder()[js, target].float() / cc.act_scale[target].float()  # [B, D] model units
        delta = f[:, :, None] * d[:, None, :]  # [B, T, D]
        clean = m.model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False).logits.float()
        lp_c = clean.log_softmax(-1)[:, :-1][at.to(device)]  # [B, T-1, V] each row's clean context
        r_ids, r_mask = ids[at], mask[at]  # [B, T]
        with _subtract_at(m.layers[layer], delta.to(device)):
            ablated = m.model(input_ids=r_ids.to(device), attention_mask=r_mask.to(device),
                              use_cache=False).logits.float()  # [B, T, V]
        lp_a = ablated.log_softmax(-1)[:, :-1]  # [B, T-1, V]
        nxt = r_ids[:, 1:].to(device)[..., None]  # [B, T-1, 1]
        dloss = (lp_c.gather(-1, nxt) - lp_a.gather(-1, nxt)).squeeze(-1)  # [B, T-1]
        kl = (lp_c.exp() * (lp_c - lp_a)).sum(-1)  # [B, T-1]
        fires = (f[:, :-1] > 0) & (r_mask[:, 1:] > 0)  # a next token exists and the latent fires
        for b, r in enumerate(ridx):
            sel = fires[b].to(device)
            acc = sums.setdefault(rows[r][0], [0.0, 0.0, 0.0, 0.0])
            acc[0] += float(dloss[b][sel].sum())
            acc[1] += float(kl[b][sel].sum())
            acc[2] += float(sel.sum())
            acc[3] += 1
    return {j: Ablation(delta_loss=round(a[0] / a[2], 6) if a[2] else 0.0, kl=round(a[1] / a[2], 6) if a[2] else 0.0,
                        n_positions=int(a[2]), n_contexts=int(a[3])) for j, a in sums.items()}


@torch.no_grad()
def activation_histograms(cc: CrossCoder, shards: Iterator[dict[str, Tensor]], cols: list[int] | None,
                          latents: list[int], upper: dict[int, float] | None = None,
                          bins: int = 20) -> dict[int, Histogram]:
    """Per latent: histogram of its nonzero activations (inference rule) and firing density, one pass over
    the cache (shards [n, M, D] one at a time). Bins span 0 .. `upper[j]` (the largest activation of its
    top examples, drawn from the same cache: its maximum), else 2 x its max on the first shard; values
    beyond fall in the last bin."""
    if not latents:
        return {}
    lat = torch.tensor(latents)
    counts = torch.zeros(len(latents), bins, dtype=torch.long)  # [L, bins]
    active = torch.zeros(len(latents), dtype=torch.long)
    top: Tensor | None = None
    n_tokens = 0
    for shard in shards:
        acts = shard["acts"] if cols is None else shard["acts"][:, cols]  # [n, M, D]
        f = cc.encode_latents(cc.normalize(acts.float()), lat)  # [n, L]
        if top is None:  # [L]: the bin range, fixed before counting
            first = 2.0 * f.amax(0)
            top = torch.tensor([float((upper or {}).get(j, 0.0)) or float(first[i]) for i, j in enumerate(latents)])
            top = top.clamp_min(1e-6)
        n_tokens += f.shape[0]
        on = f > 0  # [n, L]
        active += on.sum(0)
        b = (f / top * bins).long().clamp_(0, bins - 1)  # [n, L]
        counts.scatter_add_(1, b.T, on.T.long())  # rows: latents
    assert top is not None
    return {j: Histogram(edges=[round(float(top[i]) * k / bins, 5) for k in range(bins + 1)],
                         counts=counts[i].tolist(), density=round(float(active[i]) / max(n_tokens, 1), 7),
                         n_tokens=n_tokens)
            for i, j in enumerate(latents)}
