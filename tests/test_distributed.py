"""torchrun with 2 CPU processes (gloo) against one process: harvest, training, kill -9 and resume.

How the comparisons are made:
- harvest: every cache row is keyed by (context, position); the 2-rank and 1-rank caches must hold
  the same keys, and the rows sorted by key must be equal (bf16 storage; observed bit-identical,
  asserted within one bf16 step). Shard order and row order differ by design.
- training: the same activation cache and global batch (each rank takes half of every batch).
  BatchTopK turns float rounding into the occasional flipped pick at the top-k cut, so the runs are
  compared with a tolerance: relative L2 difference of every weight < 5e-3 (observed ~4e-4 after
  40 steps; a per-rank instead of global top-k gives ~4e-2) and logged loss / FVU within 1e-4
  relative (observed <= 3e-5).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from latentdiff.config import dump_config
from latentdiff.core.cache import iter_shards, load_stats, read_manifest
from latentdiff.core.crosscoder import CrossCoder
from latentdiff.run import Run
from tests.conftest import small_run_config

pytestmark = pytest.mark.timeout(400)

WEIGHT_RTOL = 5e-3
METRIC_RTOL = 1e-4

# Runs the latentdiff CLI but SIGKILLs one rank at a chosen point: a real kill -9, mid-stage.
DYING_CLI = """
import os, signal
from latentdiff.core import cache, train
from latentdiff.core import distributed as dist

write_shard, save_checkpoint = cache.ShardWriter.write_shard, train.Trainer.save_checkpoint

def dying_write_shard(self, idx, ctx_start, ctx_end):
    if dist.rank() == 1 and idx >= 2:  # rank 1 at the second commit (rank 0 may have written its own)
        os.kill(os.getpid(), signal.SIGKILL)
    return write_shard(self, idx, ctx_start, ctx_end)

def dying_save_checkpoint(self):
    save_checkpoint(self)
    if dist.is_main() and self.step >= 20:  # rank 0, right after the step-20 checkpoint
        os.kill(os.getpid(), signal.SIGKILL)

cache.ShardWriter.write_shard = dying_write_shard
train.Trainer.save_checkpoint = dying_save_checkpoint
from latentdiff.cli import main
main()
"""


def _torchrun(cwd: Path, *args: str, script: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`torchrun --standalone --nproc_per_node 2 latentdiff ARGS` (or a script) in cwd."""
    bin_dir = Path(sys.executable).parent
    torchrun = [str(bin_dir / "torchrun")]
    if not (bin_dir / "torchrun").is_file():
        torchrun = [sys.executable, "-m", "torch.distributed.run"]
    target = str(script) if script else shutil.which("latentdiff", path=str(bin_dir)) or "latentdiff"
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_PORT")}
    cmd = [*torchrun, "--standalone", "--nproc_per_node", "2", target, *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=180)


def _config_file(run_dir: Path) -> Path:
    path = run_dir.parent / f"{run_dir.name}.yaml"
    dump_config(small_run_config(run_dir), path)
    return path


def _rows(cache_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """All rows of a cache sorted by (context, position): keys [n], acts [n, M, D]."""
    shards = list(iter_shards(cache_dir, ("acts", "ctx", "pos")))
    key = torch.cat([s["ctx"].long() * 1_000_000 + s["pos"].long() for s in shards])  # [n]
    acts = torch.cat([s["acts"] for s in shards]).float()  # [n, M, D]
    order = key.argsort()
    return key[order], acts[order]


def _copy_harvest(src: Path, dst: Path) -> Path:
    """A run dir holding src's activation cache (so both trainings read identical batches)."""
    shutil.copytree(src / "activations", dst / "activations")
    (dst / "stages").mkdir(parents=True)
    for marker in ("harvest.json", "harvest.started.json"):
        shutil.copy(src / "stages" / marker, dst / "stages" / marker)
    return _config_file(dst)


def assert_same_crosscoder(a: Path, b: Path, weight_rtol: float = WEIGHT_RTOL, metric_rtol: float = METRIC_RTOL,
                           metrics: tuple[str, ...] = ("loss", "l0", "dead_frac")) -> None:
    """Two trained crosscoder directories agree: every weight (relative L2) and the logged metrics (and FVUs)."""
    ca, cb = CrossCoder.from_pretrained(a), CrossCoder.from_pretrained(b)
    assert ca.spec == cb.spec
    for (name, x), (_, y) in zip(ca.state_dict().items(), cb.state_dict().items()):
        rel = float((x - y).norm() / x.norm().clamp_min(1e-12))
        assert rel < weight_rtol, f"{name}: {rel=} >= {weight_rtol=}"
    ma = [json.loads(ln) for ln in (a / "metrics.jsonl").read_text().splitlines()]
    mb = [json.loads(ln) for ln in (b / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in ma] == [m["step"] for m in mb] == [10, 20, 30, 40]
    for ra, rb in zip(ma, mb):
        for key in [k for k in ra if k.startswith("fvu_")] + list(metrics):
            assert rb[key] == pytest.approx(ra[key], rel=metric_rtol, abs=1e-6), f"step {ra['step']} {key}"


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference: harvest + train in this (non-torchrun) process."""
    assert "WORLD_SIZE" not in os.environ
    run = Run(small_run_config(tmp_path_factory.mktemp("single") / "run"))
    run.show_progress = False
    run.stage("harvest")
    run.stage("train")
    return run.dir


def test_harvest_two_ranks_same_rows_one_manifest_resumes_after_kill(single: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "two"
    cfg = _config_file(run_dir)
    script = tmp_path / "dying_cli.py"
    script.write_text(DYING_CLI)
    killed = _torchrun(tmp_path, "harvest", str(cfg), script=script)
    assert killed.returncode != 0, killed.stderr[-3000:]
    partial = read_manifest(run_dir / "activations" / "train")
    assert partial is not None and not partial.complete
    assert [s.file for s in partial.shards] == ["shard_00000.safetensors", "shard_00001.safetensors"]

    resumed = _torchrun(tmp_path, "harvest", str(cfg))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    for split in ("train", "heldout"):
        one, two = single / "activations" / split, run_dir / "activations" / split
        assert len(list(two.glob("manifest*.json"))) == 1
        m1, m2 = read_manifest(one), read_manifest(two)
        assert m2 is not None and m1 is not None and m2.complete
        assert (m2.n_tokens, m2.n_contexts, m2.excluded) == (m1.n_tokens, m1.n_contexts, m1.excluded)
        assert {s.file for s in m2.shards} == {p.name for p in two.glob("shard_*.safetensors")}
        k1, x1 = _rows(one)
        k2, x2 = _rows(two)
        assert torch.equal(k1, k2), f"{split}: the ranks harvested other (context, position) rows"
        torch.testing.assert_close(x2, x1, rtol=2**-7, atol=0)
    for a, b in zip(load_stats(single / "activations" / "train"), load_stats(run_dir / "activations" / "train")):
        torch.testing.assert_close(b, a)
    for name in ("contexts.npy", "docs.jsonl"):
        assert (run_dir / "activations" / "heldout" / name).read_bytes() == (
            single / "activations" / "heldout" / name
        ).read_bytes()


# data parallel (DDP, the default) and a sharded dictionary (one block of latents per rank)
MODES = {"ddp": [], "shard_dict": ["crosscoder.shard_dict=true"]}


@pytest.mark.parametrize("mode", list(MODES))
def test_train_two_ranks_matches_one(single: Path, tmp_path: Path, mode: str) -> None:
    cfg = _copy_harvest(single, tmp_path / "two")
    result = _torchrun(tmp_path, "train", str(cfg), *MODES[mode])
    assert result.returncode == 0, result.stderr[-3000:]
    assert_same_crosscoder(single / "crosscoders" / "joint", tmp_path / "two" / "crosscoders" / "joint")


@pytest.mark.parametrize("mode", list(MODES))
def test_two_rank_checkpoint_resumes_on_one_rank(single: Path, tmp_path: Path, mode: str) -> None:
    run_dir = tmp_path / "two"
    cfg = _copy_harvest(single, run_dir)
    script = tmp_path / "dying_cli.py"
    script.write_text(DYING_CLI)
    killed = _torchrun(tmp_path, "train", str(cfg), *MODES[mode], script=script)
    assert killed.returncode != 0, killed.stderr[-3000:]
    out = run_dir / "crosscoders" / "joint"
    assert (out / "checkpoint.pt").is_file() and not (out / "crosscoder.safetensors").exists()
    assert torch.load(out / "checkpoint.pt", weights_only=False)["step"] == 20
    run = Run(small_run_config(run_dir))
    run.show_progress = False
    run.stage("train")  # this process: one rank
    assert_same_crosscoder(single / "crosscoders" / "joint", out)


def test_whole_pipeline_under_torchrun_rank0_finishes_alone(tmp_path: Path) -> None:
    """`torchrun ... latentdiff run`: harvest and train on both ranks, then rank 0 alone (one label run)."""
    run_dir = tmp_path / "whole"
    cfg = _config_file(run_dir)
    result = _torchrun(tmp_path, "run", str(cfg))
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("report:") == 1, result.stdout  # printed by rank 0 only
    run = Run.open(run_dir)
    assert set(run.status().values()) == {"done"}
    assert (run_dir / "report" / "report.html").is_file()
    findings = run.findings()
    keys = [(f.ref.key, f.pair) for f in findings]  # a joint latent has one finding per pair it is specific to
    assert len(keys) == len(set(keys)) > 0  # one labelling run, no duplicate finding
    assert not list(run_dir.glob("agent-w*.sqlite"))
