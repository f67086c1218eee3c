"""CPU counterparts of the CUDA-only branches (docs/benchmarks.md "CUDA branches and their CPU fallbacks").

Each test runs the code a CUDA branch runs, or its CPU fallback, on the CPU: 'auto' device and
dtype choice, bf16 weights in the harvest, bf16 autocast through the sparse crosscoder path, the
Trainer's autocast switch, the host-to-device copy, and a `harvest.device_map` placement spread over
devices by accelerate. tests/test_gpu.py runs the CUDA side.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from latentdiff.config import CrosscoderConfig, DataConfig, ModelSpec
from latentdiff.core.crosscoder import CrossCoder, CrossCoderSpec, auxk_loss, recon_loss
from latentdiff.core.data import iter_context_batches
from latentdiff.core.harvest import paired_activations
from latentdiff.core.models import check_compatible, load_model, resolve_device, resolve_dtype
from latentdiff.core.train import Trainer, to_device
from latentdiff.stages.base import load_models
from tests.conftest import small_run_config


def test_auto_device_and_dtype(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_dtype("auto", torch.device("cpu")) is torch.float32
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # the branch a GPU machine takes
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_dtype("auto", torch.device("cuda")) is torch.bfloat16
    assert resolve_dtype("float16", torch.device("cuda")) is torch.float16
    assert resolve_device("cuda:1") == torch.device("cuda", 1)


def test_to_device_cpu_fallback_is_the_batch_itself() -> None:
    batch = torch.randn(8, 2, 4)  # [B, M, D]
    moved = to_device(batch, torch.device("cpu"))
    assert moved is batch and not moved.is_pinned()


def _organisms(dtype: str) -> list:
    specs = [ModelSpec(name=n, path=f"organism:{n}", role="base" if n == "base" else "finetune", dtype=dtype)
             for n in ("base", "shift")]
    return [load_model(s, "cpu") for s in specs]


def test_bf16_weights_harvest_matches_fp32_on_cpu() -> None:
    """The CUDA default ('auto' = bf16 weights) on the CPU: rows within bf16 tolerance of fp32, fp32 out."""
    data = DataConfig(ctx_len=32)
    rows = {}
    for dtype in ("float32", "bfloat16"):
        models = _organisms(dtype)
        layer = check_compatible(models, None)
        batch = next(iter(iter_context_batches(models[0].tokenizer, data, "train", 4, 10**6)))
        rows[dtype] = paired_activations(models, batch, layer, data)
    (ref, ctx, pos, _), (low, ctx_b, pos_b, _) = rows["float32"], rows["bfloat16"]
    assert torch.equal(ctx, ctx_b) and torch.equal(pos, pos_b)
    assert low.dtype is torch.float32 and low.device.type == "cpu"
    rel = (low - ref).norm(dim=-1) / ref.norm(dim=-1)  # [n, M]
    assert float(rel.mean()) < 0.02 and float(rel.max()) < 0.05, f"{rel.mean()=} {rel.max()=}"
    assert float(rel.max()) > 0  # the bf16 weights path really ran


def test_device_map_split_over_devices_harvests_the_same_rows(tmp_path: Path) -> None:
    """harvest.device_map with accelerate: each model split between the CPU and disk offload.

    The embeddings stay on the CPU and the blocks are offloaded, so accelerate's hooks move
    weights and activations between placements during the forward pass: the same dispatch that a
    device_map over several GPUs uses. The rows must equal those of a plain `.to(device)` load.
    """
    harvest = {"batch_size": 16, "shard_tokens": 3_000, "device": "cpu", "device_map": "auto",
               "max_memory": {"cpu": "8MB"}, "offload_folder": str(tmp_path / "offload")}
    cfg = small_run_config(tmp_path / "run", harvest=harvest)
    spread, layer = load_models(cfg)
    for m in spread:
        assert set(m.model.hf_device_map.values()) == {"cpu", "disk"}, m.model.hf_device_map
    plain = [load_model(s, "cpu") for s in cfg.models]
    batch = next(iter(iter_context_batches(plain[0].tokenizer, cfg.data, "train", 4, 10**6)))
    got, ref = paired_activations(spread, batch, layer, cfg.data), paired_activations(plain, batch, layer, cfg.data)
    for a, b in zip(got[:3], ref[:3]):  # rows [n, M, D], ctx, pos
        assert torch.equal(a, b)
    assert got[3] == ref[3] and got[0].shape[1] == 3


def _step(cc: CrossCoder, x: torch.Tensor, bf16: bool) -> tuple[object, torch.Tensor, dict[str, torch.Tensor]]:
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        out = cc(x, k=4)
        loss = recon_loss(x, out.recon.float())
        loss = loss + auxk_loss(cc, x, out.recon.float(), out.pre, torch.ones(cc.spec.dict_size))
    loss.backward()  # outside autocast, as Trainer.train_step does
    return out, loss.detach(), {n: p.grad for n, p in cc.named_parameters()}


def test_sparse_path_under_bf16_autocast_matches_fp32() -> None:
    """bf16 autocast (the CUDA training default) through the CSR fast path and AuxK, on the CPU.

    Only the dense encoder matmul runs in bf16; the sparse kernels get fp32 values (CPU sparse
    kernels have no bf16 at all, so a bf16 leak would raise here).
    """
    torch.manual_seed(0)
    spec = CrossCoderSpec(arch="batchtopk", n_models=2, d_model=16, dict_size=64, k=4)
    x = torch.randn(256, 2, 16)  # [N, M, D]
    out32, loss32, grads32 = _step(CrossCoder(spec, seed=0), x, bf16=False)
    out16, loss16, grads16 = _step(CrossCoder(spec, seed=0), x, bf16=True)
    assert out16.vals.dtype is torch.float32 and out16.recon.dtype is torch.float32
    kept32, kept16 = ({tuple(r) for r in o.idx.tolist()} for o in (out32, out16))
    # k * N kept, plus every entry tied with the cut: bf16 pre-activations tie often (8-bit mantissa)
    assert len(kept32) == 4 * 256 and 4 * 256 <= len(kept16) <= 1.05 * 4 * 256
    assert len(kept16 & kept32) >= 0.99 * len(kept32)  # bf16 rounding may swap a few entries at the cut
    assert not torch.equal(loss16, loss32)  # the bf16 encoder matmul really ran
    torch.testing.assert_close(loss16, loss32, rtol=5e-3, atol=0)
    for name, g in grads32.items():
        rel = float((grads16[name] - g).norm() / g.norm())
        assert rel < 0.1, f"grad of {name}: relative error {rel}"


def test_trainer_bf16_autocast_is_cuda_only(tmp_path: Path) -> None:
    """On the CPU, autocast_bf16=True (the default) trains bit-identically to fp32."""
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randn(64, 2, 8, generator=gen) + 1.0 for _ in range(3)]  # [B, M, D]
    spec = CrossCoderSpec(arch="batchtopk", n_models=2, d_model=8, dict_size=32, k=4)
    weights = []
    for bf16 in (True, False):
        cfg = CrosscoderConfig(dict_size=32, k=4, batch_size=64, steps=3, warmup_steps=0, dead_tokens=64,
                               lr=1e-3, autocast_bf16=bf16)
        trainer = Trainer(cfg, spec, torch.zeros(2, 8), torch.ones(2), tmp_path, torch.device("cpu"))
        for b in batches:
            trainer.train_step(b)
        weights.append(trainer.cc.state_dict())
    for name, w in weights[0].items():
        assert torch.equal(w, weights[1][name]), name
