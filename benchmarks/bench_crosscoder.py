"""Crosscoder training step: sparse fast path vs the dense reference, same data and settings.

Usage: python benchmarks/bench_crosscoder.py [--d-model 256] [--models 2] [--dict 2048] [--k 32]
Reports tokens/s of full training steps (forward, backward, Adam) and final FVU after the same
number of steps on the same synthetic sparse data, at equal L0.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.dense_reference import dense_forward  # noqa: E402
from latentdiff.core.crosscoder import CrossCoder, CrossCoderSpec, recon_loss  # noqa: E402


def synthetic(n: int, M: int, D: int, n_feat: int, seed: int) -> torch.Tensor:
    """Sparse-feature activations [n, M, D] with model-specific and shared features."""
    g = torch.Generator().manual_seed(seed)
    basis = torch.randn(n_feat, M, D, generator=g) / D**0.5
    basis[: n_feat // 4, 1:] = 0  # some features exist only in model 0
    f = torch.rand(n, n_feat, generator=g) * (torch.rand(n, n_feat, generator=g) < 16 / n_feat)
    return torch.einsum("nf,fmd->nmd", f, basis)


def run(mode: str, data: torch.Tensor, spec: CrossCoderSpec, steps: int, batch: int) -> dict[str, float]:
    torch.manual_seed(0)
    cc = CrossCoder(spec, seed=0)
    opt = torch.optim.Adam(cc.parameters(), lr=1e-3)
    n = data.shape[0]
    t0, l0 = None, 0.0
    for step in range(steps):
        if step == 3:
            t0 = time.perf_counter()
        x = data[(step * batch) % n : (step * batch) % n + batch]
        if mode == "fast":
            out = cc(x)
            recon, l0 = out.recon, out.idx.shape[0] / x.shape[0]
        else:
            recon, f = dense_forward(cc, x)
            l0 = float((f > 0).sum()) / x.shape[0]
        loss = recon_loss(x, recon)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    elapsed = time.perf_counter() - t0
    with torch.no_grad():
        x = data[:4096]
        recon = cc(x).recon
        fvu = float((x - recon).pow(2).sum() / (x - x.mean(0)).pow(2).sum())
    return {"tok_s": (steps - 3) * batch / elapsed, "fvu": fvu, "l0": l0}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--models", type=int, default=2)
    p.add_argument("--dict", type=int, default=2048)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    spec = CrossCoderSpec(
        arch="batchtopk", n_models=args.models, d_model=args.d_model, dict_size=args.dict, k=args.k
    )
    data = synthetic(args.batch * 16, args.models, args.d_model, 512, seed=0)
    results = {m: run(m, data, spec, args.steps, args.batch) for m in ("dense", "fast")}
    results["speedup"] = results["fast"]["tok_s"] / results["dense"]["tok_s"]
    results["config"] = vars(args) | {"threads": torch.get_num_threads()}
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
