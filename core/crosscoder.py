"""Crosscoders over M models' activations: L1 and BatchTopK, sharing one module.

Shapes: N tokens, M models, D = d_model, F = dictionary size.
    W_enc [M, D, F], b_enc [F], W_dec [F, M, D], b_dec [M, D]
    encode: pre = sum_m x^m W_enc^m + b_enc                    # [N, F]
    L1:        f = ReLU(pre)
    BatchTopK: s = ReLU(pre) * sum_m ||d_j^m||; keep the top k*N of s over the batch (training), or
               s > theta (inference; theta is an EMA of the smallest kept score), f = ReLU(pre) there.
    decode: x_hat^m = sum_j f_j d_j^m + b_dec^m                 # [N, M, D]
Sources: Anthropic 2024 crosscoders; Minder et al. 2025 (arXiv:2504.02922) and
science-of-finetuning/dictionary_learning (BatchTopKCrossCoder, CrossCoderTrainer); see
shared METHOD.md sections 1-2.

Fast path: the decoder runs only on the active (token, latent) pairs (a sparse matmul), and the
backward pass never materialises the dense [N, F] gradient of the encoder; `benchmarks/dense_reference.py`
holds the plain dense implementation that tests compare against.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any, Literal, NamedTuple

import torch
from pydantic import BaseModel, ConfigDict, Field
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from latentdiff.errors import CorruptFile
from latentdiff.io import atomic_write, atomic_write_json, read_model

warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")


class CrossCoderSpec(BaseModel):
    """Architecture of a crosscoder (saved as cfg.json beside the weights)."""

    model_config = ConfigDict(extra="forbid")
    arch: Literal["batchtopk", "l1"] = Field(description="Sparsity mechanism.")
    n_models: int = Field(gt=0, description="M: models whose activations are coded jointly.")
    d_model: int = Field(gt=0, description="D: activation width (same for every model).")
    dict_size: int = Field(gt=0, description="F: number of latents.")
    k: int = Field(default=32, gt=0, description="BatchTopK: mean active latents per token.")
    n_shared: int = Field(
        default=0, ge=0, description="Latents [0, n_shared) whose decoder is tied across models."
    )
    model_names: list[str] = Field(default_factory=list, description="Names of the M models.")


class ForwardOutput(NamedTuple):
    """What one crosscoder pass returns."""

    recon: Tensor  # [N, M, D] reconstruction
    idx: Tensor  # [nnz, 2] (token, latent) indices of the active latents
    vals: Tensor  # [nnz] their activations f (unscaled)
    pre: Tensor  # [N, F] ReLU'd pre-activations (detached), used by AuxK and stats


def _csr(rows: Tensor, cols: Tensor, vals: Tensor, shape: tuple[int, int]) -> Tensor:
    """CSR matrix from entries sorted by (row, col)."""
    crow = torch.zeros(shape[0] + 1, dtype=torch.long, device=vals.device)
    crow[1:] = torch.bincount(rows, minlength=shape[0]).cumsum(0)
    return torch.sparse_csr_tensor(crow, cols, vals, shape, check_invariants=False)


def _csr_t(rows: Tensor, cols: Tensor, vals: Tensor, shape: tuple[int, int]) -> Tensor:
    """CSR of the transpose [shape[1], shape[0]] of the (row, col)-sorted entries."""
    order = torch.argsort(cols, stable=True)
    return _csr(cols[order], rows[order], vals[order], (shape[1], shape[0]))


class _SparseDecode(torch.autograd.Function):
    """out[n] = sum over active (n, j): v * W[j]; gradients only on the active entries.

    idx [nnz, 2] must be sorted by (token, latent); W [F, K]; out [N, K]. Under bf16 autocast
    (CUDA training) the decode stays in W's dtype: only the dense encoder matmul runs in bf16.
    """

    @staticmethod
    def forward(ctx, idx: Tensor, vals: Tensor, W: Tensor, n_tokens: int) -> Tensor:  # type: ignore[override]
        vals = vals.to(W.dtype)  # bf16 autocast: the sparse kernels run in the weights' dtype (fp32)
        ctx.save_for_backward(idx, vals, W)
        ctx.n_tokens = n_tokens
        with torch.autocast(W.device.type, enabled=False):  # autocast would cast this CSR matmul to bf16
            return _csr(idx[:, 0], idx[:, 1], vals, (n_tokens, W.shape[0])) @ W

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        idx, vals, W = ctx.saved_tensors
        shape = (ctx.n_tokens, W.shape[0])
        grad_vals = grad_W = None
        if ctx.needs_input_grad[1]:
            # dL/dv_(n,j) = <grad_out[n], W[j]> on the active pattern only (sampled matmul)  [nnz]
            pattern = _csr(idx[:, 0], idx[:, 1], torch.zeros_like(vals), shape)
            grad_vals = torch.sparse.sampled_addmm(  # W.T as a view: 1 ms, where a contiguous copy took 5
                pattern, grad_out.contiguous(), W.T, beta=0.0
            ).values()
        if ctx.needs_input_grad[2]:
            grad_W = _csr_t(idx[:, 0], idx[:, 1], vals, shape) @ grad_out  # [F, K]
        return None, grad_vals, grad_W, None


class _SparseEncode(torch.autograd.Function):
    """Gather pre-activations at active pairs: v = x[n] . W_enc[:, j] + b[j] (sparse backward).

    The values are computed outside (from the dense pre-activations, without grad); this function
    only routes their gradient: dL/dW[:, j] = sum_n g_(n,j) x[n], never forming a dense [N, F].
    """

    @staticmethod
    def forward(ctx, x: Tensor, W: Tensor, b: Tensor, idx: Tensor, pre_vals: Tensor):  # type: ignore[override]
        # x [N, K], W [K, F], b [F], idx [nnz, 2] sorted by (token, latent), pre_vals [nnz]
        ctx.save_for_backward(x, idx)
        ctx.f_dim = W.shape[1]
        return pre_vals.to(W.dtype, copy=True)  # fp32 values even when autocast made pre bf16

    @staticmethod
    def backward(ctx, grad_v: Tensor):  # type: ignore[override]
        x, idx = ctx.saved_tensors
        g_t = _csr_t(idx[:, 0], idx[:, 1], grad_v, (x.shape[0], ctx.f_dim))  # [F, N]
        grad_W = (g_t @ x).T  # [K, F]
        grad_b = torch.zeros(ctx.f_dim, dtype=grad_v.dtype, device=grad_v.device)
        grad_b.index_add_(0, idx[:, 1], grad_v)
        return None, grad_W, grad_b, None, None


SAMPLE_SIZE = 65_536  # entries of the scores read to bound the batch's n_keep-th largest from below


def _sample_stride(total: int, n_cols: int) -> int:
    """A stride that reads about SAMPLE_SIZE entries of a row-major [*, n_cols] matrix, coprime with
    n_cols so that the sample visits every column (a stride dividing F would read a few latents only)."""
    stride = max(1, total // SAMPLE_SIZE)
    while math.gcd(stride, n_cols) != 1:
        stride += 1
    return stride


def batch_topk_flat(scores: Tensor, n_keep: int, k: int | None = None) -> Tensor:
    """Row-major flat indices of the n_keep largest positive entries of scores [N, F], and their ties.

    The kept set is every positive entry >= the batch's n_keep-th largest score: entries tied with it
    are all kept (a few more than n_keep), so the set is a function of the scores alone, never of how a
    top-k routine orders equal values. Ties are common: identical rows (the same token in the same
    context, e.g. a chat template's first tokens) have identical scores, and a top-k that keeps one of
    them and drops the other made the trained crosscoder depend on the top-k implementation
    (docs/organisms.md, sessions 6 and 7).

    Without a top-k over all N*F entries: a strided sample of the scores (~65k entries, every column
    visited) gives a value v that about 1.4 n_keep entries reach (the sample's share above the
    n_keep-th largest is estimated with a margin of ~9 standard deviations); one pass finds the entries
    >= v, and if there are at least n_keep of them the batch's n_keep-th largest score is >= v and is
    found by a selection among those alone. Otherwise (a sample that misjudged the scores) the bound
    falls back to each row's top k, whose n_keep-th largest value is always <= the batch's. The result is
    exact either way; the sample only decides the speed. `k` (per-token budget) sets the fallback's
    per-row width (default: n_keep / N).
    """
    N, F = scores.shape
    flat_scores = scores.flatten()  # [N*F] a view
    total = flat_scores.numel()
    if n_keep >= total:
        return (flat_scores > 0).nonzero().squeeze(1)
    flat = None
    stride = _sample_stride(total, F)
    sample = flat_scores[::stride]  # [~SAMPLE_SIZE] a strided view
    expect = n_keep * sample.numel() / total  # sampled entries expected above the n_keep-th largest
    rank = math.ceil(1.25 * expect + 3.0 * math.sqrt(expect) + 8)
    if rank < sample.numel():
        v = sample.topk(rank, sorted=False).values.min()
        keep = flat_scores >= v if v > 0 else flat_scores > 0
        flat = keep.nonzero().squeeze(1)  # row-major
        if flat.numel() < n_keep and v > 0:
            flat = None  # v was above the n_keep-th largest: bound it from the rows instead
    if flat is None:
        per_row = min(k or max(1, n_keep // N), F)
        if n_keep <= N * per_row and per_row < F:  # the rows' candidates' n_keep-th largest <= the batch's
            v = scores.topk(per_row, dim=1, sorted=False).values.flatten().topk(n_keep, sorted=False).values.min()
        else:
            v = flat_scores.new_tensor(-math.inf)
        keep = flat_scores >= v if v > 0 else flat_scores > 0  # only positive entries are ever kept
        flat = keep.nonzero().squeeze(1)
    if flat.numel() > n_keep:
        vals = flat_scores[flat]
        kth = vals.topk(n_keep, sorted=False).values.min()  # the batch's n_keep-th largest score
        flat = flat[vals >= kth]  # with every entry tied with it
    return flat


def init_directions(d_model: int, dict_size: int, init_scale: float = 1.0, seed: int = 0) -> Tensor:
    """Initial encoder columns [D, F]: kaiming-uniform, each latent's column scaled to `init_scale`.

    Every model starts from the same columns (DL init); `W_dec` starts as their transpose. A pure
    function of the seed, so a dictionary block on one rank can slice out exactly its columns.
    """
    gen = torch.Generator().manual_seed(seed)
    bound = 1.0 / math.sqrt(d_model)
    w = torch.empty(d_model, dict_size).uniform_(-bound, bound, generator=gen)  # [D, F]
    return w / w.norm(dim=0, keepdim=True) * init_scale


def _encoder_to_public(module: nn.Module, state: dict[str, Tensor], prefix: str, _meta: Any) -> None:
    """state_dict: the latent-major `W_enc_t` [F, M, D] leaves as `W_enc` [M, D, F], in its place."""
    key = prefix + "W_enc_t"
    if key in state:
        items = [(prefix + "W_enc" if k == key else k, v.permute(1, 2, 0) if k == key else v)
                 for k, v in state.items()]
        state.clear()
        state.update(items)


def _encoder_from_public(module: nn.Module, state: dict[str, Tensor], prefix: str, *_: Any) -> None:
    """load_state_dict: `W_enc` [M, D, F] (files, checkpoints, other formats) goes into `W_enc_t`."""
    key = prefix + "W_enc"
    if key in state:
        t = state.pop(key)
        state[prefix + "W_enc_t"] = t.permute(2, 0, 1) if t.dim() == 3 else t  # a wrong shape fails as before


class CrossCoder(nn.Module):
    """An M-model crosscoder (L1 or BatchTopK) with an optional tied-decoder shared slice."""

    def __init__(
        self, spec: CrossCoderSpec, init_scale: float = 1.0, seed: int = 0, directions: Tensor | None = None
    ) -> None:
        """A fresh crosscoder; `directions` [D, F] replaces the seeded `init_directions` (a block's slice)."""
        super().__init__()
        self.spec = spec
        M, D, F = spec.n_models, spec.d_model, spec.dict_size
        if directions is None:
            directions = init_directions(D, F, init_scale, seed)
        assert directions.shape == (D, F), f"{tuple(directions.shape)=} != {(D, F)=}"
        w = directions.T.unsqueeze(1).expand(F, M, D)  # same initial encoder for every model (DL init)
        # The encoder is stored latent-major, W_enc_t [F, M, D], and read as W_enc [M, D, F] (a view): its
        # gradient comes out of the sparse product as [F, M*D] and lands without a transposing copy (3 ms of
        # a step at F 4,096), and torch's fused Adam needs contiguous tensors. State dicts and files carry
        # `W_enc` [M, D, F] as before (the hooks below translate).
        self.W_enc_t = nn.Parameter(w.contiguous())  # [F, M, D]
        self.b_enc = nn.Parameter(torch.zeros(F))  # [F]
        self.W_dec = nn.Parameter(w.contiguous())  # [F, M, D]
        self.b_dec = nn.Parameter(torch.zeros(M, D))  # [M, D]
        self.register_buffer("threshold", torch.tensor(-1.0))  # BatchTopK inference threshold
        self.register_buffer("act_mean", torch.zeros(M, D))  # normalisation: x' = (x - mean) * scale
        self.register_buffer("act_scale", torch.ones(M))
        self.register_state_dict_post_hook(_encoder_to_public)
        self.register_load_state_dict_pre_hook(_encoder_from_public)

    @property
    def W_enc(self) -> Tensor:
        """Encoder [M, D, F]: a view of the latent-major parameter `W_enc_t` [F, M, D] (writes go through)."""
        return self.W_enc_t.permute(1, 2, 0)

    # ------------------------------------------------------------------ pieces

    def decoder(self) -> Tensor:
        """Effective decoder [F, M, D]: the shared slice uses model 0's vectors for every model."""
        s = self.spec.n_shared
        if s == 0:
            return self.W_dec
        shared = self.W_dec[:s, :1].expand(s, self.spec.n_models, self.spec.d_model)
        return torch.cat([shared, self.W_dec[s:]], dim=0)

    def decoder_norms(self) -> Tensor:
        """Per-model decoder norms ||d_j^m||  [F, M]."""
        return self.decoder().norm(dim=-1)

    def normalize(self, x: Tensor) -> Tensor:
        """Raw activations [N, M, D] -> normalised (the crosscoder's input space)."""
        return (x - self.act_mean) * self.act_scale[:, None]

    def denormalize(self, x: Tensor) -> Tensor:
        """Normalised [N, M, D] -> raw activation space."""
        return x / self.act_scale[:, None] + self.act_mean

    def pre_acts(self, x: Tensor) -> Tensor:
        """ReLU(sum_m x^m W_enc^m + b_enc)  [N, F] for normalised x [N, M, D]."""
        N = x.shape[0]
        flat = x.reshape(N, -1)  # [N, M*D]
        return torch.relu(flat @ self.W_enc.reshape(-1, self.spec.dict_size) + self.b_enc)

    def select(
        self, pre: Tensor, k: int | None = None, use_threshold: bool = False, global_batch: bool = False
    ) -> Tensor:
        """Active (token, latent) indices [nnz, 2] under the architecture's rule.

        global_batch (under torchrun, each rank holding a slice of the batch): BatchTopK keeps the
        top k * N_global scores over every rank's slice, not k * N_local per rank.
        """
        if self.spec.arch == "l1":
            return (pre > 0).nonzero()
        scores = pre * self.decoder_norms().sum(-1)  # [N, F]
        if use_threshold:
            return (scores > self.threshold.clamp_min(0)).nonzero()
        k = self.spec.k if k is None else k
        n_all = self.keep_over_ranks(k, pre.shape[0], global_batch)
        if n_all is not None:  # the scores of one batch are spread over the ranks
            from latentdiff.core.distributed import global_topk_mask

            flat = scores.flatten()  # [N*F]
            keep = (global_topk_mask(flat, n_all) & (flat > 0)).nonzero().squeeze(1)  # row-major
        else:
            keep = batch_topk_flat(scores, min(k * pre.shape[0], scores.numel()), k)
        return torch.stack([keep // pre.shape[1], keep % pre.shape[1]], dim=1)

    # ------------------------------------------------------------------ forward

    def forward(
        self, x: Tensor, k: int | None = None, use_threshold: bool = False, global_batch: bool = False
    ) -> ForwardOutput:
        """Normalised x [N, M, D] -> reconstruction and active latents (sparse fast path).

        global_batch: x is this rank's slice of a batch spread over torchrun ranks (see `select`).
        """
        N, M, D = x.shape
        W_enc = self.W_enc.reshape(M * D, -1)  # [M*D, F]
        with torch.no_grad():
            pre = torch.relu(x.reshape(N, -1) @ W_enc + self.b_enc)  # [N, F]
            idx = self.select(pre, k, use_threshold, global_batch)  # [nnz, 2]
            pre_vals = pre[idx[:, 0], idx[:, 1]]  # [nnz]
        vals = _SparseEncode.apply(x.reshape(N, -1), W_enc, self.b_enc, idx, pre_vals)
        dec = self.decoder().reshape(self.spec.dict_size, M * D)  # [F, M*D]
        recon = self.sum_blocks(_SparseDecode.apply(idx, vals, dec, N)).view(N, M, D) + self.b_dec
        return ForwardOutput(recon, idx, vals, pre)

    def encode(self, x: Tensor, use_threshold: bool = True) -> Tensor:
        """Dense latent activations f [N, F] for normalised x (threshold rule at inference)."""
        pre = self.pre_acts(x)
        idx = self.select(pre, use_threshold=use_threshold)
        f = torch.zeros_like(pre)
        f[idx[:, 0], idx[:, 1]] = pre[idx[:, 0], idx[:, 1]]
        return f

    def encode_latents(self, x: Tensor, latents: Tensor) -> Tensor:
        """`encode(x)[:, latents]` under the inference rule, computing only those latents  [N, S].

        The rule is per latent (L1: f > 0; BatchTopK: score > threshold), so the columns of the other
        latents are never needed: a [N, M*D] x [M*D, S] product instead of [M*D, F] (the same values up to
        the GEMM's rounding, bit for bit on the demo's held-out cache; 5.7x faster for its 299 of 2,048).
        """
        N = x.shape[0]
        W = self.W_enc.reshape(-1, self.spec.dict_size)[:, latents]  # [M*D, S]
        pre = torch.relu(x.reshape(N, -1) @ W + self.b_enc[latents])  # [N, S]
        if self.spec.arch == "l1":
            return pre
        keep = pre * self.decoder_norms()[latents].sum(-1) > self.threshold.clamp_min(0)  # [N, S]
        return pre * keep

    def decode(self, f: Tensor) -> Tensor:
        """Dense f [N, F] -> reconstruction [N, M, D] (normalised space)."""
        return torch.einsum("nf,fmd->nmd", f, self.decoder()) + self.b_dec

    def decode_sparse(self, idx: Tensor, vals: Tensor, n_tokens: int, bias: bool = True) -> Tensor:
        """Decode only the given active pairs; [N, M, D]."""
        M, D = self.spec.n_models, self.spec.d_model
        dec = self.decoder().reshape(self.spec.dict_size, M * D)
        out = self.sum_blocks(_SparseDecode.apply(idx, vals, dec, n_tokens)).view(n_tokens, M, D)
        return out + self.b_dec if bias else out

    # ------------------------------------------------------------------ dictionary blocks
    # A crosscoder holds the whole dictionary; `latentdiff.core.shard.ShardedCrossCoder` (one block
    # of latents per torchrun rank) overrides these four to combine the blocks.

    def keep_over_ranks(self, k: int, n_tokens: int, global_batch: bool) -> int | None:
        """BatchTopK entries to keep over all ranks together, or None when this rank picks alone.

        global_batch: every rank holds an equal slice of the batch and the whole dictionary.
        """
        if not global_batch:
            return None
        from latentdiff.core.distributed import world_size

        return min(k * n_tokens, n_tokens * self.spec.dict_size) * world_size()

    def sum_blocks(self, partial: Tensor) -> Tensor:
        """Decoder output [N, M*D] of this module's latents -> that of the whole dictionary."""
        return partial

    def total(self, t: Tensor) -> Tensor:
        """Sum over the whole dictionary of a per-latent quantity t [F] (a count, a penalty)."""
        return t.sum()

    def row_topk(self, scores: Tensor, k: int) -> Tensor:
        """Per token, the k highest positive scores [N, F] over the dictionary: indices [nnz, 2], row-major."""
        N, F = scores.shape
        top = scores.topk(min(k, F), dim=1)
        rows = torch.arange(N, device=scores.device).repeat_interleave(top.indices.shape[1])
        keep = top.values.reshape(-1) > 0
        flat = (rows[keep] * F + top.indices.reshape(-1)[keep]).sort().values  # row-major order for CSR
        return torch.stack([flat // F, flat % F], dim=1)

    # ------------------------------------------------------------------ persistence

    def save(self, directory: Path) -> None:
        """Write `cfg.json` + `crosscoder.safetensors` (atomically)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        atomic_write(directory / "crosscoder.safetensors", lambda p: save_file(tensors, str(p)))
        atomic_write_json(directory / "cfg.json", self.spec.model_dump())

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | torch.device = "cpu") -> CrossCoder:
        """Load a crosscoder saved by `save`; a missing, corrupt or mismatched file is a `CorruptFile` naming it."""
        directory = Path(directory)
        spec = read_model(directory / "cfg.json", CrossCoderSpec, "crosscoder config")
        model = cls(spec)
        weights = directory / "crosscoder.safetensors"
        try:
            model.load_state_dict(load_file(str(weights)))
        except FileNotFoundError:
            raise CorruptFile(f"{weights}: missing crosscoder weights; train again (`--from train`)") from None
        except (SafetensorError, OSError, RuntimeError) as err:  # RuntimeError: shapes or keys differ from cfg.json
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise CorruptFile(f"{weights}: unreadable crosscoder weights ({first[:200]}); train again "
                              "(`--from train`)") from None
        return model.to(device)


# ---------------------------------------------------------------------- losses


class LossParts(NamedTuple):
    """Loss terms of one step."""

    total: Tensor
    recon: Tensor
    sparsity: Tensor
    auxk: Tensor


def recon_loss(x: Tensor, recon: Tensor) -> Tensor:
    """Sum over models of the mean squared error per token: mean_n sum_m ||x^m - x_hat^m||^2."""
    return (x - recon).pow(2).sum(-1).sum(-1).mean()


def l1_penalty(cc: CrossCoder, idx: Tensor, vals: Tensor, n_tokens: int, shared_ratio: float) -> Tensor:
    """lambda-free L1 term: mean_n sum_j f_j * sum_m ||d_j^m|| (shared slice: ratio * f ||d||)."""
    norms = cc.decoder_norms()  # [F, M]
    weight = norms.sum(-1)  # [F]
    s = cc.spec.n_shared
    if s:
        weight = torch.cat([shared_ratio * norms[:s, 0], weight[s:]])
    return (vals * weight[idx[:, 1]]).sum() / n_tokens


def auxk_loss(
    cc: CrossCoder, x: Tensor, recon: Tensor, pre: Tensor, dead: Tensor, global_batch: bool = False
) -> Tensor:
    """AuxK (Gao et al. 2024 via DL): reconstruct the residual with the top dead latents.

    e = x - x_hat (detached); k_aux = min(M*D/2, #dead); per token take the top k_aux dead latents
    by score, decode their f without b_dec; loss = mean||e - e_hat||^2 / mean||e - mean(e)||^2.
    global_batch (x is this rank's slice): the denominator is over the global batch, so the
    rank-averaged loss and gradient equal the single-process ones.
    """
    n_dead = int(cc.total(dead))  # over the whole dictionary (every block when it is sharded)
    if n_dead == 0:
        return x.new_zeros(())
    N = x.shape[0]
    k_aux = min(cc.spec.d_model * cc.spec.n_models // 2, n_dead)
    e = (x - recon).detach().reshape(N, -1)  # [N, M*D]
    scores = pre * cc.decoder_norms().sum(-1) * dead  # [N, F], zero for live latents
    idx = cc.row_topk(scores, k_aux)  # [nnz, 2]
    W_enc = cc.W_enc.reshape(-1, cc.spec.dict_size)
    vals = _SparseEncode.apply(x.reshape(N, -1), W_enc, cc.b_enc, idx, pre[idx[:, 0], idx[:, 1]])
    e_hat = cc.decode_sparse(idx, vals, N, bias=False).reshape(N, -1)  # [N, M*D]
    num = (e - e_hat).pow(2).sum(-1).mean()
    if global_batch:
        from latentdiff.core.distributed import all_reduce, world_size

        n = N * world_size()
        e_mean = all_reduce(e.sum(0)) / n  # [M*D] global batch mean
        den = all_reduce((e - e_mean).pow(2).sum()) / n
    else:
        den = (e - e.mean(0)).pow(2).sum(-1).mean()
    loss = num / den
    return torch.nan_to_num(loss, nan=0.0)
