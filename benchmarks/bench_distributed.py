"""Harvest and training throughput: 1 process vs `torchrun --nproc_per_node N` (CPU: gloo).

    python benchmarks/bench_distributed.py --size small --ranks 2
    python benchmarks/bench_distributed.py --size demo --ranks 2
    python benchmarks/bench_distributed.py --size wide --ranks 2   # a dictionary of 65,536 latents

Each configuration is run through the CLI in a fresh run directory. Harvest: the train split's
context tokens per second of the harvest loop (from the stage's log line; model loading excluded),
and the stage's wall time. Training, on 1 rank, on N data-parallel ranks (DDP) and on N ranks with
the dictionary sharded (`crosscoder.shard_dict=true`): the last `tok_s` in metrics.jsonl (steps
only, global batch tokens), the stage's wall time, and the peak RSS of the largest process (the
whole process: Python, torch and the batch included, not only the crosscoder). All trainings read
the same activation cache. The thread count follows OMP_NUM_THREADS (torchrun sets 1 per rank when
it is unset).
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from latentdiff.config import build_config, dump_config
from latentdiff.core.cache import read_manifest
from latentdiff.rundir import RunDir

log = logging.getLogger("bench_distributed")

SIZES = {
    # tests/conftest.py small_run_config
    "small": {
        "models": ["base", "it", "shift"],
        "data": {"n_tokens": 12_000, "n_heldout_tokens": 2_000, "ctx_len": 64},
        "harvest": {"batch_size": 16, "shard_tokens": 3_000},
        "crosscoder": {
            "dict_size": 256,
            "k": 8,
            "batch_size": 256,
            "steps": 40,
            "warmup_steps": 5,
            "checkpoint_every": 1000,
            "dead_tokens": 5_000,
        },
    },
    # the demo's shapes (4 models, ctx 128, dict 2048, k 32, batch 1024) on a quarter of its tokens
    "demo": {
        "models": ["base", "it", "shift", "null"],
        "data": {"n_tokens": 100_000, "n_heldout_tokens": 2_000, "ctx_len": 128},
        "harvest": {"batch_size": 32, "shard_tokens": 32_768},
        "crosscoder": {
            "dict_size": 2048,
            "k": 32,
            "batch_size": 1024,
            "steps": 100,
            "warmup_steps": 10,
            "checkpoint_every": 1000,
            "dead_tokens": 200_000,
        },
    },
    # a wide dictionary (2 models, d_model 256, F = 65,536): weights + Adam moments are 805 MB
    "wide": {
        "models": ["base", "it"],
        "data": {"n_tokens": 40_000, "n_heldout_tokens": 2_000, "ctx_len": 128},
        "harvest": {"batch_size": 32, "shard_tokens": 32_768},
        "crosscoder": {
            "dict_size": 65_536,
            "k": 32,
            "batch_size": 1024,
            "steps": 20,
            "warmup_steps": 5,
            "checkpoint_every": 1000,
            "dead_tokens": 200_000,
        },
    },
}
# the largest descendant's peak RSS (ru_maxrss of RUSAGE_CHILDREN covers children of children)
PEAK_RSS = (
    "import resource, subprocess, sys; rc = subprocess.run(sys.argv[1:]).returncode; "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(rc)"
)


def _config(size: str, run_dir: Path) -> Path:
    spec = SIZES[size]
    roles = {"base": "base", "null": "control"}
    data = {
        "name": f"bench-{size}",
        "run_dir": str(run_dir),
        "models": [{"name": m, "path": f"organism:{m}", "role": roles.get(m, "finetune")} for m in spec["models"]],
        "design": "joint",
        "data": spec["data"],
        "harvest": spec["harvest"],
        "crosscoder": spec["crosscoder"],
    }
    path = run_dir.parent / f"{run_dir.name}.yaml"
    dump_config(build_config(data), path)
    return path


def _run(stage: str, cfg: Path, ranks: int, *overrides: str) -> tuple[float, str, float]:
    """Run a stage; (wall seconds, stderr, peak RSS in MB of the largest process)."""
    exe = str(Path(sys.executable).parent / "latentdiff")
    cmd = [exe, stage, str(cfg), *overrides]
    if ranks > 1:
        cmd = [str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nproc_per_node", str(ranks), *cmd]
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", PEAK_RSS, *cmd], check=True, capture_output=True, text=True)
    peak_kb = int(proc.stderr.strip().splitlines()[-1])
    return time.perf_counter() - t0, proc.stderr, peak_kb / 1024


def main() -> None:
    """Time harvest and train at one size on 1 and N ranks."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", choices=sorted(SIZES), default="small")
    ap.add_argument("--ranks", type=int, default=2)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    root = Path(tempfile.mkdtemp(prefix="bench_dist_"))
    try:
        for ranks in (1, args.ranks):
            run_dir = root / f"r{ranks}"
            cfg = _config(args.size, run_dir)
            secs, stderr, _ = _run("harvest", cfg, ranks)
            tokens = read_manifest(RunDir(run_dir).cache("train")).n_tokens
            rate = re.search(r"harvested train.*?([0-9.]+) context-tok/s", stderr)
            log.info(
                "%s harvest %d rank(s): %d tokens, stage %.1f s (with model loading), loop %s context-tok/s",
                args.size,
                ranks,
                tokens,
                secs,
                rate.group(1) if rate else "?",
            )
        modes = [(1, "1 rank", []), (args.ranks, "DDP", []), (args.ranks, "sharded", ["crosscoder.shard_dict=true"])]
        for ranks, mode, overrides in modes:  # all on the 1-rank cache: identical batches
            run_dir = root / "r1"
            RunDir(run_dir).remove([RunDir.CROSSCODERS])
            RunDir(run_dir).forget("train")
            secs, _, peak_mb = _run("train", _config(args.size, run_dir), ranks, *overrides)
            rows = [json.loads(ln) for ln in RunDir(run_dir).training_metrics("joint").open()]
            log.info(
                "%s train %d rank(s) %s: %.1f s, %.0f tok/s, final loss %.4f, peak RSS per process %.0f MB",
                args.size,
                ranks,
                mode,
                secs,
                rows[-1]["tok_s"],
                rows[-1]["loss"],
                peak_mb,
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
