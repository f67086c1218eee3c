"""Plain dense crosscoder forward (the reference the sparse fast path is tested and timed against).

Everything is materialised: the [N, F] activation matrix and a dense decoder matmul, with autograd
doing the backward pass. Same parameters and selection rule as `latentdiff.core.crosscoder`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from latentdiff.core.crosscoder import CrossCoder


def dense_forward(cc: CrossCoder, x: Tensor, k: int | None = None) -> tuple[Tensor, Tensor]:
    """Reconstruction [N, M, D] and dense activations f [N, F] for normalised x [N, M, D]."""
    N, M, D = x.shape
    pre = torch.relu(x.reshape(N, M * D) @ cc.W_enc.reshape(M * D, -1) + cc.b_enc)  # [N, F]
    with torch.no_grad():
        idx = cc.select(pre.detach(), k)  # [nnz, 2]
        mask = torch.zeros_like(pre)
        mask[idx[:, 0], idx[:, 1]] = 1.0
    f = pre * mask  # [N, F]
    recon = torch.einsum("nf,fmd->nmd", f, cc.decoder()) + cc.b_dec  # [N, M, D]
    return recon, f
