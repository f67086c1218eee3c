"""Where a crosscoder training step's time goes: its dense GEMM against this CPU's matmul rate.

Usage: python -m benchmarks.bench_gemm_share [--models 4] [--d-model 256] [--dict 2048] [--k 32]
       [--batch 1024] [--threads 2]

Prints (1) this machine's measured float32 matmul rate (a large square GEMM, the best of 5), (2) the
rate of the step's one dense GEMM (the encoder's [B, M*D] x [M*D, F] pre-activations; every other
product of the step is sparse, over the k*B active pairs), (3) the time of a full `Trainer.train_step`
(forward, backward, clip, Adam, metrics) on random data at the same shapes, and the GEMM's share of it.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch


def _best(fn, reps: int = 5) -> float:  # noqa: ANN001
    fn()
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=int, default=4)
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--dict", type=int, default=2048)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=40)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from latentdiff.config import CrosscoderConfig
    from latentdiff.core.crosscoder import CrossCoderSpec
    from latentdiff.core.train import Trainer

    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    peak = 2 * n**3 / _best(lambda: a @ b) / 1e9
    B, K, F = args.batch, args.models * args.d_model, args.dict
    x, w = torch.randn(B, K), torch.randn(K, F)
    t_gemm = _best(lambda: torch.relu(x @ w), reps=10)
    gemm_rate = 2 * B * K * F / t_gemm / 1e9
    spec = CrossCoderSpec(arch="batchtopk", n_models=args.models, d_model=args.d_model, dict_size=F, k=args.k)
    cfg = CrosscoderConfig(arch="batchtopk", dict_size=F, k=args.k, batch_size=B, steps=10_000)
    tr = Trainer(cfg, spec, torch.zeros(args.models, args.d_model), torch.ones(args.models),
                 Path("/tmp/bench_gemm_share"), torch.device("cpu"))
    g = torch.Generator().manual_seed(0)
    data = [torch.randn(B, args.models, args.d_model, generator=g) for _ in range(args.steps)]
    for d in data[:5]:
        tr.train_step(d)
    t0 = time.perf_counter()
    for d in data[5:]:
        tr.train_step(d)
    t_step = (time.perf_counter() - t0) / (len(data) - 5)
    print(f"threads {args.threads}: float32 matmul {n}^3: {peak:.0f} GFLOP/s")
    print(f"encoder GEMM [{B}, {K}] x [{K}, {F}] + ReLU: {t_gemm * 1e3:.1f} ms, {gemm_rate:.0f} GFLOP/s "
          f"({gemm_rate / peak:.0%} of the square GEMM's rate)")
    print(f"training step: {t_step * 1e3:.1f} ms ({B / t_step:,.0f} tok/s); the GEMM is {t_gemm / t_step:.0%} of it")


if __name__ == "__main__":
    main()
