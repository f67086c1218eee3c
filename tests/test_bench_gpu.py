"""benchmarks/bench_gpu.py: the analytic FLOP count, the peak table, and a CPU smoke run of its code path.

The smoke run asserts what the benchmark computed, never how fast it was.
"""

from __future__ import annotations

import pytest

from benchmarks.bench_gpu import SCALES, forward_flops_per_token, gemma2_config, peak_for, run


def test_flops_per_token_gemma2_2b_by_hand() -> None:
    cfg = gemma2_config(SCALES["full"])
    assert (cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers) == (2304, 9216, 26)
    assert (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim) == (8, 4, 256)
    # one block: q, o 2304x2048 each; k, v 2304x1024 each; gate, up, down 2304x9216 each
    weights = 2 * 2304 * 2048 + 2 * 2304 * 1024 + 3 * 2304 * 9216  # 77,856,768
    attn = 4 * 8 * 256 * (1024 + 1) / 2  # QK^T and AV over the causal half of a 1024-token context
    assert forward_flops_per_token(cfg, 14, 1024) == pytest.approx(14 * (2 * weights + attn))
    assert forward_flops_per_token(cfg, 14, 1024) == pytest.approx(2.2387e9, rel=1e-4)


@pytest.mark.parametrize(
    ("card", "peak"),
    [
        ("NVIDIA H100 80GB HBM3", 989e12),
        ("NVIDIA H100 PCIe", 756e12),
        ("NVIDIA H200", 989e12),
        ("NVIDIA A100-SXM4-80GB", 312e12),
        ("Tesla T4", None),
    ],
)
def test_peak_table(card: str, peak: float | None) -> None:
    assert peak_for(card) == peak


def test_cpu_smoke_run_small_scale() -> None:
    result = run("cpu", "small", iters=2, peak_override=1e12)
    h, t = result["harvest"], result["train"]
    s = SCALES["small"]
    assert result["device"] == "cpu" and result["peak_bf16_flops"] == 1e12
    assert h["blocks_run"] == s.layer + 1 and h["tokens_per_forward"] == s.harvest_batch * s.ctx_len
    for name in ("forward", "harvest"):
        assert h[f"{name}_tok_s"] > 0
        # MFU is achieved FLOP/s over the given peak
        assert h[f"{name}_mfu"] == pytest.approx(h[f"{name}_tflops"] * 1e12 / 1e12, abs=2e-3)
    assert h["meets_target"] is None and t["meets_target"] is None  # targets are for --scale full on a GPU
    assert t["dict_size"] == 32 * s.hidden and t["tok_s"] > 0 and not t["autocast_bf16"]
    assert t["l0"] == pytest.approx(s.k, abs=0.5)  # BatchTopK keeps k * batch entries
    assert t["auxk"] > 0  # dead_tokens = one batch: AuxK runs in every timed step
