"""Dictionary sharding: one contiguous block of latents per torchrun rank (`crosscoder.shard_dict`).

For dictionaries too large for one device. With W ranks and F latents, rank r holds latents
[r F/W, (r+1) F/W): its slice of W_enc [M, D, F/W], b_enc [F/W] and W_dec [F/W, M, D] (and their Adam
moments); b_dec [M, D], the threshold and the normalisation buffers are replicated. Every rank sees
the whole global batch (no data parallelism), and:

- pre-activations and BatchTopK scores are computed per block [B, F/W]; the top k*B scores over
  all blocks are picked with the gathered cut of `distributed.global_topk_mask` (the same rule as
  one process up to ties at the cut), and AuxK's per-token top-k_aux dead latents likewise;
- each rank decodes its block's active pairs and the partial reconstructions [B, M*D] are summed
  over ranks (`_SumOverRanks`), so every rank holds the same reconstruction and loss, and
  backpropagates into its own block only. The backward of that sum is the identity: rank r's
  loss is the global loss, and d(loss)/d(partial_r) = d(loss)/d(sum). No gradient is all-reduced;
  b_dec gets the same gradient on every rank because its loss is the same;
- the gradient-norm clip adds the squared norms of every block (all-reduce) to b_dec's, once;
- checkpoints and the final weights are gathered on rank 0 into the single-process layout, so a
  checkpoint written by W ranks resumes on any number of ranks, sharded or not, and vice versa.

Memory: a rank holds 1/W of the dictionary and its optimiser state, plus the dense pre-activations
of its block [B, F/W]. Initialisation builds the seeded [D, F] encoder on the CPU once per rank and
keeps its block; loading a checkpoint memory-maps it and copies out the block.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from latentdiff.core import distributed as dist
from latentdiff.core.crosscoder import CrossCoder, CrossCoderSpec, init_directions
from latentdiff.errors import ConfigError

# tensor -> its latent dimension; the rest is replicated. `W_enc` [M, D, F] is the encoder's name in state
# dicts and files, `W_enc_t` [F, M, D] the parameter's (named_parameters, optimiser state)
SHARDED_DIMS = {"W_enc": 2, "W_enc_t": 0, "b_enc": 0, "W_dec": 0}


def block_bounds(dict_size: int, world: int, rank: int) -> tuple[int, int]:
    """Latents [start, stop) held by `rank` when `dict_size` is split into `world` equal blocks."""
    if dict_size % world:
        raise ConfigError(f"crosscoder.dict_size ({dict_size}) must divide by the {world} ranks to shard it")
    size = dict_size // world
    return rank * size, (rank + 1) * size


class _SumOverRanks(torch.autograd.Function):
    """Forward: the sum over ranks of each rank's partial output. Backward: the identity (see module doc)."""

    @staticmethod
    def forward(ctx, partial: Tensor) -> Tensor:  # type: ignore[override]
        return dist.all_reduce(partial, "sum")

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        return grad


class ShardedCrossCoder(CrossCoder):
    """This rank's block of a crosscoder's latents; `spec` is this block's, `full_spec` the whole one's."""

    def __init__(self, spec: CrossCoderSpec, init_scale: float = 1.0, seed: int = 0) -> None:
        start, stop = block_bounds(spec.dict_size, dist.world_size(), dist.rank())
        size = stop - start
        local = spec.model_copy(update={"dict_size": size, "n_shared": min(max(spec.n_shared - start, 0), size)})
        directions = init_directions(spec.d_model, spec.dict_size, init_scale, seed)[:, start:stop]  # [D, F/W]
        super().__init__(local, directions=directions.contiguous())
        self.full_spec, self.start, self.stop = spec, start, stop

    def sum_blocks(self, partial: Tensor) -> Tensor:
        """[N, M*D] decoded from this block -> decoded from every block (same on every rank)."""
        return _SumOverRanks.apply(partial)

    def total(self, t: Tensor) -> Tensor:
        """Sum over every block of a per-latent quantity."""
        return dist.all_reduce(t.sum(), "sum")

    def row_topk(self, scores: Tensor, k: int) -> Tensor:
        """Per token, this block's share of the top k positive scores over every block [nnz, 2].

        Each rank proposes its per-token top min(k, F/W); the k-th largest gathered score is the cut.
        Exact ties at the cut are all kept (one process keeps k of them).
        """
        local = scores.topk(min(k, scores.shape[1]), dim=1).values  # [N, c]
        gathered = dist.all_gather_cat(local.T.contiguous()).T  # [N, W*c] (W*c >= k: k <= #dead <= F)
        cut = gathered.topk(k, dim=1).values[:, -1:]  # [N, 1]
        return ((scores >= cut) & (scores > 0)).nonzero()  # row-major

    def keep_over_ranks(self, k: int, n_tokens: int, global_batch: bool) -> int | None:
        """Training BatchTopK over every block: the top k*N scores of the whole [N, F] batch."""
        assert not global_batch, "a sharded dictionary sees the whole batch on every rank"
        return min(k * n_tokens, n_tokens * self.full_spec.dict_size)

    # ------------------------------------------------------------------ whole-dictionary state

    def block_of(self, name: str, full: Tensor) -> Tensor:
        """This rank's slice of a whole-dictionary tensor stored under parameter `name` (others: as is)."""
        dim = SHARDED_DIMS.get(name)
        return full if dim is None else full.narrow(dim, self.start, self.stop - self.start)

    def gather(self, name: str, t: Tensor) -> Tensor | None:
        """Rank 0: the whole-dictionary tensor from every rank's block (CPU); None elsewhere. Collective."""
        dim = SHARDED_DIMS.get(name)
        if dim is None:
            return t.detach().cpu() if dist.is_main() else None
        return dist.gather_to_main(t, dim)

    def full_state_dict(self) -> dict[str, Tensor] | None:
        """Rank 0: the state dict of the whole crosscoder (single-process layout); None elsewhere."""
        parts = {name: self.gather(name, t) for name, t in self.state_dict().items()}
        return parts if dist.is_main() else None  # type: ignore[return-value]

    def load_full_state_dict(self, state: dict[str, Tensor]) -> None:
        """Load this rank's block of a whole-crosscoder state dict."""
        self.load_state_dict({name: self.block_of(name, t) for name, t in state.items()})

    def full_optimizer_state(self, opt: torch.optim.Optimizer) -> dict[str, Any] | None:
        """Rank 0: `opt.state_dict()` as one process training the whole crosscoder would hold it."""
        sd = opt.state_dict()
        params = dict(self.named_parameters())
        names = list(params)
        state: dict[int, dict[str, Any]] = {}
        for i, entry in sorted(sd["state"].items()):  # the same order on every rank (collectives)
            shape = params[names[i]].shape
            state[i] = {key: self.gather(names[i], v) if torch.is_tensor(v) and v.shape == shape else v
                        for key, v in sorted(entry.items())}
        return {"state": state, "param_groups": sd["param_groups"]} if dist.is_main() else None

    def load_full_optimizer_state(self, opt: torch.optim.Optimizer, sd: dict[str, Any]) -> None:
        """Load this rank's block of a whole-crosscoder optimiser state into `opt`."""
        params = dict(self.named_parameters())
        names = list(params)
        state = {
            i: {key: self.block_of(names[i], v) if torch.is_tensor(v) and v.dim() == params[names[i]].dim() else v
                for key, v in entry.items()}
            for i, entry in sd["state"].items()
        }
        opt.load_state_dict({"state": state, "param_groups": sd["param_groups"]})

    def to_full(self) -> CrossCoder | None:
        """Rank 0: the whole crosscoder as a plain `CrossCoder` on the CPU; None elsewhere. Collective."""
        state = self.full_state_dict()
        if state is None:
            return None
        whole = CrossCoder(self.full_spec, directions=torch.zeros(self.full_spec.d_model, self.full_spec.dict_size))
        whole.load_state_dict(state)
        return whole


def clip_grad_norm_(cc: ShardedCrossCoder, max_norm: float) -> Tensor:
    """`torch.nn.utils.clip_grad_norm_` over the whole sharded crosscoder; returns the total norm.

    The squared norms of the block parameters' gradients are summed over ranks; the replicated
    parameters (b_dec) have the same gradient on every rank and count once.
    """
    block = [p.grad for n, p in cc.named_parameters() if n in SHARDED_DIMS and p.grad is not None]
    shared = [p.grad for n, p in cc.named_parameters() if n not in SHARDED_DIMS and p.grad is not None]
    sq_block = dist.all_reduce(torch.stack([g.float().pow(2).sum() for g in block]).sum())
    sq_shared = torch.stack([g.float().pow(2).sum() for g in shared]).sum() if shared else torch.zeros_like(sq_block)
    total = (sq_block + sq_shared).sqrt()
    coef = (max_norm / (total + 1e-6)).clamp(max=1.0)
    for g in block + shared:
        g.mul_(coef.to(g.dtype))
    return total
