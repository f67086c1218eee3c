"""GPU benchmark: harvest tokens/s and MFU on a Gemma-2-2B-shaped model; crosscoder training tokens/s.

Usage:
    python benchmarks/bench_gpu.py                               # one GPU, full size (targets apply)
    python benchmarks/bench_gpu.py --device cpu --scale small    # CPU smoke run at a reduced size
    python benchmarks/bench_gpu.py --peak-flops 989e12           # override the card's peak bf16 FLOP/s

(a) Harvest: a random-init `Gemma2ForCausalLM` built from a `Gemma2Config` with Gemma-2-2B's real
    dimensions (no download), run through `latentdiff.core.models.forward_to_layer` to layer 13 as
    M25 does, then `.float().cpu()` as `paired_activations` does. MFU = achieved matmul FLOP/s /
    the card's peak dense bf16 FLOP/s; FLOPs per token are counted analytically for the blocks that
    forward_to_layer runs (0..layer), attention over the causal half (`forward_flops_per_token`).
(b) Training: `latentdiff.core.train.Trainer.train_step` (sparse fast path, bf16 autocast on CUDA,
    pinned host-to-device copies, AuxK active every step) on synthetic sparse-feature batches held
    in host memory: d_model 2304, 2 models, 32x expansion (F = 73,728), k = 100, batch 2048 (M25).
Targets (one H100, --scale full): harvest MFU >= 35%, training >= 50,000 tokens/s.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.bench_crosscoder import synthetic  # noqa: E402
from latentdiff.config import CrosscoderConfig, ModelSpec  # noqa: E402
from latentdiff.core.crosscoder import CrossCoderSpec  # noqa: E402
from latentdiff.core.models import LoadedModel, find_layers, forward_to_layer  # noqa: E402
from latentdiff.core.train import Trainer  # noqa: E402

# Peak dense bf16 tensor-core FLOP/s (no sparsity), vendor datasheets; first substring match wins.
PEAK_BF16_FLOPS: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),  # SXM ("NVIDIA H100 80GB HBM3")
    ("H200", 989e12),
    ("A100", 312e12),
)
TARGET_MFU = 0.35
TARGET_TRAIN_TOK_S = 50_000


@dataclass(frozen=True)
class Scale:
    """Sizes of one benchmark run."""

    hidden: int  # Gemma-2 hidden_size (= crosscoder d_model)
    intermediate: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    vocab: int
    layer: int  # captured block (M25: 13)
    ctx_len: int
    harvest_batch: int  # contexts per forward
    expansion: int  # F = expansion * d_model
    k: int
    train_batch: int  # tokens per optimisation step


SCALES = {
    "full": Scale(2304, 9216, 26, 8, 4, 256, 256_000, 13, 1024, 16, 32, 100, 2048),  # Gemma-2-2B, M25
    "small": Scale(128, 512, 4, 4, 2, 32, 2048, 1, 128, 4, 32, 16, 256),  # CPU smoke size
}


def gemma2_config(s: Scale, attn: str | None = None) -> Any:
    """A transformers Gemma2Config with the scale's dimensions (full = Gemma-2-2B's)."""
    from transformers import Gemma2Config

    cfg = Gemma2Config(
        hidden_size=s.hidden,
        intermediate_size=s.intermediate,
        num_hidden_layers=s.n_layers,
        num_attention_heads=s.n_heads,
        num_key_value_heads=s.n_kv_heads,
        head_dim=s.head_dim,
        vocab_size=s.vocab,
        query_pre_attn_scalar=s.head_dim,
    )
    if attn is not None:
        cfg._attn_implementation = attn
    return cfg


def forward_flops_per_token(cfg: Any, n_blocks: int, ctx_len: int) -> float:
    """Matmul FLOPs per token of `n_blocks` Gemma-2 blocks, forward only.

    2 * (q, k, v, o and gated-MLP weights) + attention scores and values over the causal half:
    a token attends to (T + 1) / 2 keys on average (sliding window 4096 >= T here), which costs
    2 * 2 * heads * head_dim * (T + 1) / 2. Norms, activations, softcapping and the embedding
    lookup are not counted; neither are the masked half of eager attention's T x T scores.
    """
    d, h, kv, hd, ff = (cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim,
                        cfg.intermediate_size)
    n_keys = min(ctx_len, cfg.sliding_window or ctx_len)
    weights = d * h * hd * 2 + d * kv * hd * 2 + 3 * d * ff  # q, o; k, v; gate, up, down
    attn = 2 * h * hd * (n_keys + 1)  # QK^T and AV: 4 * h * hd * mean keys (n_keys + 1) / 2
    return n_blocks * (2 * weights + attn)


def peak_for(card: str) -> float | None:
    """Peak dense bf16 FLOP/s for a CUDA device name from `PEAK_BF16_FLOPS`; None if not listed."""
    return next((p for key, p in PEAK_BF16_FLOPS if key in card), None)


def peak_flops(device: torch.device, override: float | None) -> tuple[float | None, str]:
    """Peak bf16 FLOP/s of the card (the override first), and the card's name."""
    if device.type != "cuda":
        return override, "cpu"
    name = torch.cuda.get_device_name(device)
    return (override if override is not None else peak_for(name)), name


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_harvest(s: Scale, device: torch.device, dtype: torch.dtype, iters: int, attn: str | None,
                  peak: float | None) -> dict[str, Any]:
    """Tokens/s and MFU of forward_to_layer (+ the harvest's .float().cpu()) on a Gemma-2-shaped model."""
    from transformers import Gemma2ForCausalLM

    cfg = gemma2_config(s, attn)
    torch.manual_seed(0)
    with torch.device(device):
        model = Gemma2ForCausalLM(cfg).to(dtype).eval().requires_grad_(False)
    spec = ModelSpec(name="gemma2-2b-shape", path="random-init", role="base")
    m = LoadedModel(spec=spec, path="random-init", model=model, tokenizer=None, layers=find_layers(model))
    ids = torch.randint(0, s.vocab, (s.harvest_batch, s.ctx_len))  # [B, T] on the host, as harvest gets them
    mask = torch.ones_like(ids)
    n_tok = ids.numel()
    flops_tok = forward_flops_per_token(model.config, s.layer + 1, s.ctx_len)
    out: dict[str, Any] = {
        "attn_implementation": model.config._attn_implementation,
        "dtype": str(dtype).removeprefix("torch."),
        "blocks_run": s.layer + 1,
        "tokens_per_forward": n_tok,
        "gflops_per_token": round(flops_tok / 1e9, 6),
    }
    for name in ("forward", "harvest"):  # forward alone; then with the harvest's copy to host fp32
        for i in range(iters + 2):  # 2 warm-up passes
            if i == 2:
                _sync(device)
                t0 = time.perf_counter()
            acts = forward_to_layer(m, ids, mask, s.layer)  # [B, T, D]
            if name == "harvest":
                acts = acts.float().cpu()
        _sync(device)
        tok_s = n_tok * iters / (time.perf_counter() - t0)
        out[f"{name}_tok_s"] = round(tok_s, 1)
        out[f"{name}_tflops"] = round(tok_s * flops_tok / 1e12, 3)
        out[f"{name}_mfu"] = round(tok_s * flops_tok / peak, 4) if peak else None
    assert acts.shape == (s.harvest_batch, s.ctx_len, s.hidden), f"{acts.shape=}"
    return out


def bench_train(s: Scale, device: torch.device, iters: int, bf16: bool) -> dict[str, Any]:
    """Tokens/s of Trainer.train_step at the scale's crosscoder size on synthetic host batches."""
    D, F, B = s.hidden, s.expansion * s.hidden, s.train_batch
    cfg = CrosscoderConfig(
        dict_size=F, k=s.k, batch_size=B, steps=10**6, warmup_steps=0, lr=1e-4,
        dead_tokens=B,  # a latent unused for one step counts as dead: AuxK runs every step (worst case)
        autocast_bf16=bf16,
    )
    spec = CrossCoderSpec(arch="batchtopk", n_models=2, d_model=D, dict_size=F, k=s.k)
    pool = [synthetic(B, 2, D, 512, seed=i) for i in range(4)]  # [B, 2, D] fp32 host batches, as ShuffledStream
    with tempfile.TemporaryDirectory() as tmp:  # train_step writes nothing; Trainer wants an out dir
        trainer = Trainer(cfg, spec, torch.zeros(2, D), torch.ones(2), Path(tmp), device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        for i in range(iters + 3):  # 3 warm-up steps (the first initialises b_dec)
            if i == 3:
                _sync(device)
                t0 = time.perf_counter()
            metrics = trainer.train_step(pool[i % len(pool)])
        _sync(device)
        elapsed = time.perf_counter() - t0
    return {
        "d_model": D, "n_models": 2, "dict_size": F, "k": s.k, "batch": B,
        "autocast_bf16": bf16 and device.type == "cuda",
        "tok_s": round(B * iters / elapsed, 1),
        "step_ms": round(1e3 * elapsed / iters, 2),
        "l0": metrics["l0"],
        "auxk": round(metrics["auxk"], 4),
        "peak_gpu_mem_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda"
        else None,
    }


def run(device: str, scale: str, iters: int, peak_override: float | None = None, attn: str | None = None,
        bf16: bool = True, parts: tuple[str, ...] = ("harvest", "train")) -> dict[str, Any]:
    """Both benchmarks; the targets are checked only for --scale full on a CUDA device."""
    dev = torch.device(device)
    s = SCALES[scale]
    peak, card = peak_flops(dev, peak_override)
    judged = scale == "full" and dev.type == "cuda"
    result: dict[str, Any] = {"device": card, "scale": scale, "sizes": asdict(s), "peak_bf16_flops": peak,
                              "torch": torch.__version__, "threads": torch.get_num_threads()}
    if "harvest" in parts:
        dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32  # = resolve_dtype("auto", dev)
        h = bench_harvest(s, dev, dtype, iters, attn, peak)
        h["target"] = f"harvest_mfu >= {TARGET_MFU:.0%} (one H100, --scale full)"
        h["meets_target"] = (h["harvest_mfu"] or 0) >= TARGET_MFU if judged and peak else None
        result["harvest"] = h
    if "train" in parts:
        t = bench_train(s, dev, iters, bf16)
        t["target"] = f"tok_s >= {TARGET_TRAIN_TOK_S:,} (one H100, --scale full)"
        t["meets_target"] = t["tok_s"] >= TARGET_TRAIN_TOK_S if judged else None
        result["train"] = t
    return result


def main() -> None:
    """Parse flags, run, print the JSON result."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--scale", choices=sorted(SCALES), default="full")
    p.add_argument("--iters", type=int, default=20, help="Timed passes / steps after warm-up.")
    p.add_argument("--peak-flops", type=float, default=None, help="Peak bf16 FLOP/s (overrides the table).")
    p.add_argument("--attn", default=None, help="attn_implementation (eager, sdpa, ...); default: transformers'.")
    p.add_argument("--no-bf16", action="store_true", help="Train in fp32 (no bf16 autocast).")
    p.add_argument("--only", choices=("harvest", "train"), default=None)
    args = p.parse_args()
    parts = (args.only,) if args.only else ("harvest", "train")
    result = run(args.device, args.scale, args.iters, args.peak_flops, args.attn, not args.no_bf16, parts)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
