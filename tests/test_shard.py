"""Dictionary sharding (`crosscoder.shard_dict`): 2 gloo ranks, one block of latents each, against one process.

The trainer runs on a synthetic stream (x = a few ground-truth atoms per token, some present in one
model only, plus noise; batch i a pure function of i), in three settings that exercise every
whole-dictionary step: BatchTopK with AuxK on dead latents and the threshold EMA, and L1 with a
tied-decoder shared slice that straddles the two blocks. Then checkpoints cross modes: written by
2 sharded ranks and finished by one process, and the other way round; a data-parallel (DDP)
checkpoint finished sharded.
The full pipeline (`latentdiff train ... crosscoder.shard_dict=true` under torchrun) is covered in
test_distributed.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from latentdiff.core.crosscoder import CrossCoder
from tests.test_distributed import assert_same_crosscoder

pytestmark = pytest.mark.timeout(300)

# Observed: weights within 1.2e-7 relative L2 and metrics within 1e-6 relative (float summation
# order; no top-k cut flips on this stream). Tight on purpose: Adam hides a wrong gradient scale
# (a backward that multiplied by the number of ranks moved the weights by only ~1e-3).
WEIGHT_RTOL = 1e-5
METRIC_RTOL = 1e-5

SCRIPT = r'''
import json, sys
from pathlib import Path
import torch
from latentdiff.config import CrosscoderConfig
from latentdiff.core import distributed as dist
from latentdiff.core.crosscoder import CrossCoderSpec
from latentdiff.core.train import Trainer

out, settings, stop_at = Path(sys.argv[1]), json.loads(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(1)
dist.init_from_env()
M, D, B = 2, 32, 128
atoms = torch.randn(96, M, D, generator=torch.Generator().manual_seed(1))  # [G, M, D] ground truth
atoms[:16, 1] = 0  # present in model 0 only
atoms[16:32, 0] = 0  # present in model 1 only
atoms = atoms / atoms.norm(dim=-1, keepdim=True).clamp_min(1e-6)  # unit norm per model

def batches(start):
    i = start
    while True:
        g = torch.Generator().manual_seed(1000 + i)
        which = torch.randint(0, 96, (B, 3), generator=g)  # [B, 3]
        coef = torch.rand(B, 3, 1, 1, generator=g) * 2  # [B, 3, 1, 1]
        yield (atoms[which] * coef).sum(1) + 0.02 * torch.randn(B, M, D, generator=g)  # [B, M, D]
        i += 1

cfg = CrosscoderConfig(**{"dict_size": 256, "k": 2, "batch_size": B, "steps": 40, "warmup_steps": 5,
                          "checkpoint_every": 10, "dead_tokens": 128, "lr": 3e-3, "l1_warmup_steps": 5, **settings})
spec = CrossCoderSpec(arch=cfg.arch, n_models=M, d_model=D, dict_size=cfg.dict_size, k=cfg.k,
                      n_shared=cfg.n_shared, model_names=["a", "b"])
if stop_at:  # leave after the checkpoint at step `stop_at` (every rank), as a killed run would
    save = Trainer.save_checkpoint
    def save_and_stop(self):
        save(self)
        if self.step >= stop_at:
            dist.barrier()
            dist.exit_now(3) if dist.joined() else sys.exit(3)
    Trainer.save_checkpoint = save_and_stop
Trainer(cfg, spec, torch.zeros(M, D), torch.ones(M), out, torch.device("cpu")).fit(batches, show=False)
if dist.joined():
    dist.exit_now(0)  # as the latentdiff command does under torchrun (no teardown abort)
'''


def _train(out: Path, settings: dict, ranks: int, stop_at: int = 0) -> subprocess.CompletedProcess[str]:
    """Run the trainer script in one process, or under torchrun on `ranks` gloo processes."""
    script = out.parent / "shard_train.py"
    script.write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_PORT")}
    launch = [sys.executable]
    if ranks > 1:
        launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(ranks)]
    cmd = [*launch, str(script), str(out), json.dumps(settings), str(stop_at)]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    if stop_at:  # torchrun itself exits 1 when its ranks exit 3
        assert result.returncode == 3 or "exitcode  : 3" in result.stderr, result.stderr[-3000:]
    else:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def _assert_same(a: Path, b: Path) -> None:
    assert_same_crosscoder(a, b, WEIGHT_RTOL, METRIC_RTOL, metrics=("loss", "auxk", "l0", "dead_frac"))


SETTINGS = {
    "batchtopk_auxk": {"arch": "batchtopk"},
    "l1_shared_slice": {"arch": "l1", "l1_coeff": 0.02, "n_shared": 40},  # latents 0-39: block 0 and part of 1
}


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The single-process runs, one per setting."""
    root = tmp_path_factory.mktemp("one")
    for name, settings in SETTINGS.items():
        _train(root / name, settings, ranks=1)
    return {name: root / name for name in SETTINGS}


@pytest.mark.parametrize("name", list(SETTINGS))
def test_sharded_dictionary_matches_one_process(reference: dict[str, Path], tmp_path: Path, name: str) -> None:
    out = tmp_path / name
    _train(out, {**SETTINGS[name], "shard_dict": True}, ranks=2)
    _assert_same(reference[name], out)
    metrics = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    if name == "batchtopk_auxk":  # the whole-dictionary steps really ran
        assert max(m["dead_frac"] for m in metrics) > 0 and max(m["auxk"] for m in metrics) > 0
        assert float(CrossCoder.from_pretrained(out).threshold) > 0
    assert not (out / "checkpoint.pt").exists()


def test_checkpoints_cross_between_sharded_data_parallel_and_one_process(
    reference: dict[str, Path], tmp_path: Path
) -> None:
    settings = SETTINGS["batchtopk_auxk"]
    sharded = {**settings, "shard_dict": True}
    # written by 2 sharded ranks at step 20, finished by one process
    a = tmp_path / "sharded_then_one"
    _train(a, sharded, ranks=2, stop_at=20)
    ckpt = torch.load(a / "checkpoint.pt", weights_only=False)
    assert ckpt["step"] == 20 and ckpt["cc"]["W_dec"].shape[0] == 256 and ckpt["since_fired"].shape == (256,)
    enc = ckpt["cc"]["W_enc"]  # [M, D, F]; its moments follow the latent-major parameter W_enc_t [F, M, D]
    assert ckpt["opt"]["state"][0]["exp_avg"].shape == enc.permute(2, 0, 1).shape  # whole-dictionary moments
    _train(a, settings, ranks=1)
    _assert_same(reference["batchtopk_auxk"], a)
    # written by one process, finished by 2 sharded ranks
    b = tmp_path / "one_then_sharded"
    _train(b, settings, ranks=1, stop_at=20)
    _train(b, sharded, ranks=2)
    _assert_same(reference["batchtopk_auxk"], b)
    # written by 2 data-parallel (DDP) ranks, finished by 2 sharded ranks
    c = tmp_path / "ddp_then_sharded"
    _train(c, settings, ranks=2, stop_at=20)
    _train(c, sharded, ranks=2)
    _assert_same(reference["batchtopk_auxk"], c)


def test_odd_split_is_a_clear_error(tmp_path: Path) -> None:
    script = tmp_path / "shard_train.py"
    script.write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_PORT")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
           str(tmp_path / "odd"), json.dumps({"dict_size": 255, "shard_dict": True}), "0"]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "crosscoder.dict_size (255) must divide by the 2 ranks to shard it" in result.stderr
