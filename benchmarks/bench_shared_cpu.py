"""Crosscoder training on a shared CPU: OpenMP spin-waiting vs passive waiting, idle and beside a busy process.

    python -m benchmarks.bench_shared_cpu [--steps 30] [--models 4] [--d-model 256] [--dict 2048] [--k 32]

Each cell runs the real `Trainer.train_step` (forward, AuxK, backward, clip, Adam; batch 1024, the demo's
shapes by default) in a fresh subprocess with OMP_WAIT_POLICY and the thread count set before torch loads,
and reports tokens/s. "loaded" = one other CPU-bound process (a pure-Python busy loop) runs the whole time.
Prints the table and, per thread count, loaded-passive / loaded-active and idle / loaded-passive (the issue
18 goal: no more than 2x slower with one competing process). Also trains the same synthetic data at 1x and
100x scale (with the default per-model normalisation) and prints the two final FVUs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from benchmarks.competitor import busy_process

ROOT = Path(__file__).resolve().parents[1]

CELL = r"""
import json, sys, time, torch
from pathlib import Path
import tempfile
from latentdiff.config import CrosscoderConfig
from latentdiff.core.crosscoder import CrossCoderSpec
from latentdiff.core.train import Trainer
M, D, F, K, steps = (int(a) for a in sys.argv[1:6])
torch.manual_seed(0)
cfg = CrosscoderConfig(dict_size=F, k=K, batch_size=1024, steps=1000, warmup_steps=10, dead_tokens=200000)
spec = CrossCoderSpec(n_models=M, d_model=D, dict_size=F, k=K, arch="batchtopk")
tr = Trainer(cfg, spec, torch.zeros(M, D), torch.ones(M), Path(tempfile.mkdtemp()), torch.device("cpu"))
data = torch.randn(8, 1024, M, D)
for i in range(3):
    tr.train_step(data[i % 8])
t = time.perf_counter()
for i in range(steps):
    tr.train_step(data[i % 8])
print(json.dumps({"tok_s": steps * 1024 / (time.perf_counter() - t)}))
"""

SCALE = r"""
import json, sys, torch, tempfile
from pathlib import Path
from latentdiff.config import CrosscoderConfig
from latentdiff.core.crosscoder import CrossCoderSpec
from latentdiff.core.harvest import normalization_stats
from latentdiff.core.train import Trainer
steps = int(sys.argv[1])
g = torch.Generator().manual_seed(0)
M, D, F, n_feat = 2, 128, 1024, 512
basis = torch.randn(n_feat, M, D, generator=g) / D**0.5
f = torch.rand(steps * 512, n_feat, generator=g) * (torch.rand(steps * 512, n_feat, generator=g) < 16 / n_feat)
raw = torch.einsum("nf,fmd->nmd", f, basis) + 0.3  # [N, M, D], an offset like real residual streams
out = {}
for factor in (1.0, 100.0):
    x = raw * factor
    mean, scale = normalization_stats(iter([x]), 1.0)  # [M, D], [M]: what the harvest stage computes
    cfg = CrosscoderConfig(dict_size=F, k=16, batch_size=512, steps=steps, warmup_steps=20, dead_tokens=100000)
    spec = CrossCoderSpec(n_models=M, d_model=D, dict_size=F, k=16, arch="batchtopk")
    tr = Trainer(cfg, spec, mean, scale, Path(tempfile.mkdtemp()), torch.device("cpu"))
    for i in range(steps):
        m = tr.train_step(x[i * 512 : (i + 1) * 512])
    out[str(factor)] = {k: round(v, 4) for k, v in m.items() if k.startswith("fvu")}
print(json.dumps(out))
"""


def _cell(args: argparse.Namespace, threads: int, policy: str) -> float:
    env = {**os.environ, "OMP_WAIT_POLICY": policy, "OMP_NUM_THREADS": str(threads),
           "PYTHONPATH": str(ROOT)}
    if policy == "unset":  # libgomp's default: spin a while (GOMP_SPINCOUNT 300k), then sleep
        env["OMP_WAIT_POLICY"] = ""
    argv = [str(a) for a in (args.models, args.d_model, args.dict, args.k, args.steps)]
    done = subprocess.run([sys.executable, "-c", CELL, *argv], env=env, capture_output=True, text=True, timeout=1800)
    if done.returncode:
        raise SystemExit(done.stderr[-2000:])
    return float(json.loads(done.stdout.strip().splitlines()[-1])["tok_s"])


def main() -> None:
    """Run every cell and print the table and the ratios."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--models", type=int, default=4)
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--dict", type=int, default=2048)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--scale-steps", type=int, default=150)
    args = ap.parse_args()
    rates: dict[tuple[str, int, str], float] = {}
    for load in ("idle", "loaded"):
        with busy_process(load == "loaded"):
            for threads in (1, 2):
                for policy in ("unset", "ACTIVE", "PASSIVE"):
                    rates[(load, threads, policy)] = _cell(args, threads, policy)
                    print(f"{load:6s} threads={threads} OMP_WAIT_POLICY={policy:7s} "
                          f"{rates[(load, threads, policy)]:>9,.0f} tok/s", flush=True)
    for threads in (1, 2):
        r = {(load, pol): rates[(load, threads, pol)] for load in ("idle", "loaded")
             for pol in ("unset", "ACTIVE", "PASSIVE")}
        print(f"threads={threads}: passive/unset loaded {r['loaded', 'PASSIVE'] / r['loaded', 'unset']:.2f}x, idle "
              f"{r['idle', 'PASSIVE'] / r['idle', 'unset']:.2f}x; passive/active loaded "
              f"{r['loaded', 'PASSIVE'] / r['loaded', 'ACTIVE']:.2f}x; idle/loaded (passive) "
              f"{r['idle', 'PASSIVE'] / r['loaded', 'PASSIVE']:.2f}x")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", SCALE, str(args.scale_steps)], env=env, capture_output=True,
                          text=True, timeout=1800)
    if done.returncode:
        raise SystemExit(done.stderr[-2000:])
    fvu = json.loads(done.stdout.strip().splitlines()[-1])  # {"1.0": {...}, "100.0": {...}}
    print(f"input scale 1x vs 100x after {args.scale_steps} steps: final FVU {fvu['1.0']} vs {fvu['100.0']}")


if __name__ == "__main__":
    main()
