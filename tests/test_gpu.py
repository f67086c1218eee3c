"""CUDA paths against their CPU results (marked `gpu`; skipped where torch.cuda.is_available() is False).

- harvest of the shipped organisms on CUDA (bf16 'auto' weights and fp32) matches the CPU harvest;
- crosscoder training steps on CUDA (bf16 autocast and fp32) match the CPU steps;
- the sparse fast path on CUDA equals the dense reference (outputs and every gradient);
- the pinned, non-blocking host-to-device copy delivers the batch intact;
- the GPU benchmark's code path runs on the card.
CPU counterparts: tests/test_device_paths.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from benchmarks.bench_crosscoder import synthetic
from latentdiff.config import CrosscoderConfig, DataConfig, ModelSpec
from latentdiff.core.crosscoder import CrossCoder, CrossCoderSpec
from latentdiff.core.data import iter_context_batches
from latentdiff.core.harvest import paired_activations
from latentdiff.core.models import check_compatible, load_model
from latentdiff.core.train import Trainer, to_device
from tests.test_crosscoder import assert_fast_path_equals_dense

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device: torch.cuda.is_available() is False"),
]
CUDA = torch.device("cuda")


def _harvest(device: str, dtype: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    specs = [ModelSpec(name=n, path=f"organism:{n}", role="base" if n == "base" else "finetune", dtype=dtype)
             for n in ("base", "shift")]
    models = [load_model(s, device) for s in specs]
    assert all(next(m.model.parameters()).device.type == torch.device(device).type for m in models)
    layer = check_compatible(models, None)
    data = DataConfig(ctx_len=64)
    batch = next(iter(iter_context_batches(models[0].tokenizer, data, "train", 8, 10**6)))
    rows, ctx, pos, _ = paired_activations(models, batch, layer, data)
    return rows, ctx, pos


@pytest.mark.parametrize(("dtype", "mean_tol", "max_tol"), [("auto", 0.02, 0.05), ("float32", 1e-4, 1e-3)])
def test_harvest_cuda_matches_cpu(dtype: str, mean_tol: float, max_tol: float) -> None:
    """'auto' is bf16 weights on CUDA (fp32 on the CPU reference); rows come back fp32 on the host."""
    ref, ctx, pos = _harvest("cpu", "float32")
    rows, ctx_g, pos_g = _harvest("cuda", dtype)
    assert torch.equal(ctx, ctx_g) and torch.equal(pos, pos_g)
    assert rows.dtype is torch.float32 and rows.device.type == "cpu" and rows.shape == ref.shape
    rel = (rows - ref).norm(dim=-1) / ref.norm(dim=-1)  # [n, M]
    assert float(rel.mean()) < mean_tol and float(rel.max()) < max_tol, f"{dtype}: {rel.mean()=} {rel.max()=}"


def _train(device: torch.device, bf16: bool, tmp: Path, steps: int = 8) -> tuple[list[dict[str, float]], CrossCoder]:
    D, F, B = 32, 1024, 256
    cfg = CrosscoderConfig(dict_size=F, k=8, batch_size=B, steps=100, warmup_steps=0, lr=1e-4, dead_tokens=B,
                           autocast_bf16=bf16)
    spec = CrossCoderSpec(arch="batchtopk", n_models=2, d_model=D, dict_size=F, k=8)
    data = synthetic(B * steps, 2, D, 128, seed=0)  # [B * steps, 2, D] on the host
    trainer = Trainer(cfg, spec, data.mean(0), torch.ones(2), tmp, device)
    metrics = [trainer.train_step(data[i * B : (i + 1) * B]) for i in range(steps)]
    return metrics, trainer.cc.cpu()


@pytest.mark.parametrize(("bf16", "tol"), [(False, 1e-3), (True, 3e-2)])
def test_train_steps_cuda_match_cpu(tmp_path: Path, bf16: bool, tol: float) -> None:
    """Losses, FVU and the trained crosscoder's reconstructions agree with the CPU run (AuxK active)."""
    ref_m, ref_cc = _train(torch.device("cpu"), bf16, tmp_path / "cpu")
    m, cc = _train(CUDA, bf16, tmp_path / "cuda")
    assert ref_m[-1]["auxk"] > 0  # latents unused for one batch count as dead: the AuxK path ran
    for step, (a, b) in enumerate(zip(ref_m, m)):
        for key in ("loss", "fvu_0", "fvu_1", "l0"):
            assert b[key] == pytest.approx(a[key], rel=tol), f"step {step} {key}: cpu {a[key]} cuda {b[key]}"
    x = synthetic(512, 2, 32, 128, seed=1)
    with torch.no_grad():
        r_ref, r = ref_cc(ref_cc.normalize(x)).recon, cc(cc.normalize(x)).recon
    rel = float((r - r_ref).norm() / r_ref.norm())
    assert rel < tol, f"{bf16=}: reconstructions differ by {rel}"


def test_bf16_autocast_changes_cuda_numerics(tmp_path: Path) -> None:
    """autocast_bf16 on CUDA really trains in mixed precision (not a silent fp32 run)."""
    fp32, _ = _train(CUDA, False, tmp_path / "fp32", steps=2)
    bf16, _ = _train(CUDA, True, tmp_path / "bf16", steps=2)
    assert fp32[-1]["loss"] != bf16[-1]["loss"]


@pytest.mark.parametrize(("arch", "n_shared"), [("batchtopk", 0), ("batchtopk", 8), ("l1", 0)])
def test_sparse_fast_path_cuda_equals_dense(arch: str, n_shared: int) -> None:
    assert_fast_path_equals_dense(arch, n_shared, CUDA)


def test_pinned_non_blocking_transfer() -> None:
    host = torch.randn(4096, 2, 2304)  # [B, M, D] 75 MB: the copy takes long enough to race a sloppy sync
    moved = to_device(host, CUDA)
    assert moved.is_cuda and not host.is_pinned()  # the caller's tensor is left as it was
    doubled = (moved * 2).cpu()  # a kernel queued after the async copy sees the copied data
    assert torch.equal(doubled, host * 2)
    assert to_device(moved, CUDA) is moved  # already on the device: no copy


def test_bench_gpu_runs_on_cuda() -> None:
    from benchmarks.bench_gpu import run

    result = run("cuda", "small", iters=2)
    assert result["device"] == torch.cuda.get_device_name(CUDA)
    assert result["harvest"]["dtype"] == "bfloat16" and result["harvest"]["harvest_tok_s"] > 0
    if result["peak_bf16_flops"] is not None:
        assert 0 < result["harvest"]["harvest_mfu"] < 1
    t = result["train"]
    assert t["autocast_bf16"] and t["tok_s"] > 0 and t["peak_gpu_mem_gib"] > 0
