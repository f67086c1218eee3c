"""Crosscoder math: losses by hand, sparse fast path == dense reference, persistence."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from benchmarks.dense_reference import dense_forward
from latentdiff.core.crosscoder import (
    CrossCoder,
    CrossCoderSpec,
    auxk_loss,
    l1_penalty,
    recon_loss,
)


def _tiny(arch: str = "batchtopk", n_shared: int = 0, F: int = 6, k: int = 2) -> CrossCoder:
    spec = CrossCoderSpec(arch=arch, n_models=2, d_model=3, dict_size=F, k=k, n_shared=n_shared)
    return CrossCoder(spec, seed=1)


def test_l1_loss_by_hand() -> None:
    cc = _tiny("l1", F=2)
    with torch.no_grad():
        cc.W_dec.zero_()
        cc.W_dec[0, 0] = torch.tensor([3.0, 4.0, 0.0])  # ||d_0^0|| = 5
        cc.W_dec[0, 1] = torch.tensor([0.0, 0.0, 2.0])  # ||d_0^1|| = 2
        cc.W_dec[1, 1] = torch.tensor([1.0, 0.0, 0.0])  # ||d_1^1|| = 1
    idx = torch.tensor([[0, 0], [0, 1], [1, 1]])
    vals = torch.tensor([2.0, 1.0, 4.0])
    # token 0: 2*(5+2) + 1*(0+1) = 15; token 1: 4*(0+1) = 4; mean over 2 tokens = 9.5
    assert l1_penalty(cc, idx, vals, 2, 0.1).item() == pytest.approx(9.5)
    x = torch.tensor([[[1.0, 0, 0], [0, 2.0, 0]]])
    recon = torch.zeros_like(x)
    assert recon_loss(x, recon).item() == pytest.approx(5.0)  # 1 + 4, summed over models


def test_l1_shared_latents_pay_reduced_penalty() -> None:
    cc = _tiny("l1", n_shared=1, F=2)
    with torch.no_grad():
        cc.W_dec.zero_()
        cc.W_dec[0, 0] = torch.tensor([3.0, 4.0, 0.0])  # shared: both models use this vector
        cc.W_dec[0, 1] = torch.tensor([9.0, 9.0, 9.0])  # ignored (tied to model 0)
    dec = cc.decoder()
    assert torch.equal(dec[0, 0], dec[0, 1])
    idx, vals = torch.tensor([[0, 0]]), torch.tensor([2.0])
    assert l1_penalty(cc, idx, vals, 1, 0.1).item() == pytest.approx(0.1 * 2 * 5)


def test_batchtopk_selects_top_k_times_n_by_scaled_score() -> None:
    cc = _tiny(F=3, k=1)
    with torch.no_grad():
        cc.W_dec.zero_()
        cc.W_dec[:, 0, 0] = torch.tensor([1.0, 10.0, 1.0])  # decoder norm sums 1, 10, 1
    pre = torch.tensor([[5.0, 1.0, 0.0], [4.0, 0.0, 3.0]])  # scores [[5,10,0],[4,0,3]]
    idx = cc.select(pre, k=1)  # keep 2 of 6: (0,1)=10 and (0,0)=5
    assert sorted(map(tuple, idx.tolist())) == [(0, 0), (0, 1)]
    cc.threshold.fill_(3.5)
    idx = cc.select(pre, use_threshold=True)  # scores > 3.5: 5, 10, 4
    assert sorted(map(tuple, idx.tolist())) == [(0, 0), (0, 1), (1, 0)]


def test_auxk_by_hand() -> None:
    cc = _tiny(F=2, k=1)
    with torch.no_grad():
        cc.W_dec.zero_()
        cc.W_dec[1, 0] = torch.tensor([1.0, 0.0, 0.0])
        cc.W_enc.zero_()
        cc.W_enc[0, 0, 1] = 1.0  # latent 1 reads x^0[0]
    x = torch.tensor([[[2.0, 0, 0], [0, 0, 0]], [[0.0, 0, 0], [0, 0, 0]]])  # [2, 2, 3]
    recon = torch.zeros_like(x)
    pre = torch.relu(x.reshape(2, -1) @ cc.W_enc.reshape(6, 2))
    dead = torch.tensor([0.0, 1.0])
    # e = x; e_hat = f_1 d_1 = [2,0,0] for token 0 -> perfect; den = mean ||e - mean e||^2 = 1
    assert auxk_loss(cc, x, recon, pre, dead).item() == pytest.approx(0.0, abs=1e-6)
    cc.W_dec.data[1, 0] = torch.tensor([0.5, 0.0, 0.0])  # e_hat = [1,0,0]: residual 1 on token 0
    assert auxk_loss(cc, x, recon, pre, dead).item() == pytest.approx((1.0 / 2) / 1.0)
    assert auxk_loss(cc, x, recon, pre, torch.zeros(2)).item() == 0.0


def assert_fast_path_equals_dense(arch: str, n_shared: int, device: torch.device = torch.device("cpu")) -> None:
    """The sparse fast path and the dense reference agree on outputs, latents and every gradient
    (on `device`; tests/test_gpu.py runs the same check on CUDA)."""
    torch.manual_seed(0)
    spec = CrossCoderSpec(arch=arch, n_models=2, d_model=16, dict_size=64, k=4, n_shared=n_shared)
    fast, ref = CrossCoder(spec, seed=3).to(device), CrossCoder(spec, seed=3).to(device)
    with torch.no_grad():
        fast.b_enc.normal_(0, 0.1)
        ref.b_enc.copy_(fast.b_enc)
    x = torch.randn(32, 2, 16, device=device)
    out = fast(x)
    recon_ref, f_ref = dense_forward(ref, x)
    torch.testing.assert_close(out.recon, recon_ref, rtol=1e-5, atol=1e-5)
    f_fast = torch.zeros_like(f_ref)
    f_fast[out.idx[:, 0], out.idx[:, 1]] = out.vals.detach()
    torch.testing.assert_close(f_fast, f_ref.detach())
    recon_loss(x, out.recon).backward()
    recon_loss(x, recon_ref).backward()
    for name, p in fast.named_parameters():
        q = dict(ref.named_parameters())[name]
        assert p.grad is not None and p.grad.device.type == device.type
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-5, msg=f"grad of {name}")


@pytest.mark.parametrize("arch", ["batchtopk", "l1"])
@pytest.mark.parametrize("n_shared", [0, 8])
def test_fast_path_equals_dense_reference(arch: str, n_shared: int) -> None:
    assert_fast_path_equals_dense(arch, n_shared)


def test_encode_decode_and_save_load(tmp_path: Path) -> None:
    cc = _tiny(F=8, k=2)
    cc.threshold.fill_(0.0)
    x = torch.randn(5, 2, 3)
    f = cc.encode(x)
    assert f.shape == (5, 8) and (f >= 0).all()
    cc.save(tmp_path / "cc")
    again = CrossCoder.from_pretrained(tmp_path / "cc")
    torch.testing.assert_close(again.encode(x), f)
    torch.testing.assert_close(again.decode(f), cc.decode(f))
    assert (tmp_path / "cc" / "cfg.json").is_file()


def test_init_encoder_is_decoder_transpose_and_same_for_models() -> None:
    cc = _tiny(F=8)
    torch.testing.assert_close(cc.W_dec.detach(), cc.W_enc.detach().permute(2, 0, 1))
    torch.testing.assert_close(cc.W_enc[0], cc.W_enc[1])
    assert cc.decoder_norms()[:, 0].allclose(torch.ones(8)) and math.isclose(
        float(cc.decoder_norms().detach().sum(-1)[0]), 2.0, rel_tol=1e-5
    )


def test_batch_topk_keeps_the_top_scores_and_every_tie_at_the_boundary() -> None:
    from latentdiff.core.crosscoder import batch_topk_flat

    def want(scores: torch.Tensor, n_keep: int) -> torch.Tensor:  # every positive entry >= the n_keep-th largest
        flat = scores.flatten()
        kth = flat.topk(n_keep).values.min()
        return ((flat >= kth) & (flat > 0)).nonzero().squeeze(1)

    g = torch.Generator().manual_seed(0)
    N, F, k = 256, 512, 8
    for case in ("spread", "one row holds most of the top", "many zeros", "duplicate rows"):
        scores = torch.rand(N, F, generator=g)  # [N, F]
        if case == "one row holds most of the top":
            scores[7] += 10.0  # row 7 alone holds F > k entries above every other row
        if case == "many zeros":
            scores[scores < 0.995] = 0.0  # fewer positive entries than k * N
        if case == "duplicate rows":
            scores[10:20] = scores[3]  # the same token in the same context: identical scores
        got = batch_topk_flat(scores, k * N, k)
        assert torch.equal(got, want(scores, k * N)), case
        if case == "duplicate rows":  # the copies are treated alike: all keep the same latents
            rows = got // F
            assert len({tuple((got[rows == r] % F).tolist()) for r in [3, *range(10, 20)]}) == 1
        if case == "spread":  # no ties: exactly the one-stage top-k
            assert torch.equal(got, scores.flatten().topk(k * N).indices.sort().values)
    # the sample misjudges the scores (only the sampled entries are high): the row bound takes over
    from latentdiff.core.crosscoder import SAMPLE_SIZE, _sample_stride

    N, F, k = 2048, 1024, 64
    stride = _sample_stride(N * F, F)
    assert stride > 1 and math.gcd(stride, F) == 1 and N * F // stride <= SAMPLE_SIZE + 1
    scores = torch.rand(N, F, generator=g)
    scores.view(-1)[::stride] += 10.0  # N*F/stride entries, far fewer than k * N
    assert scores.numel() // stride < k * N
    assert torch.equal(batch_topk_flat(scores, k * N, k), want(scores, k * N))
    for r in range(20):  # random shapes with many ties
        n_rows, n_lat = int(torch.randint(1, 200, (1,), generator=g)), int(torch.randint(2, 300, (1,), generator=g))
        kk = int(torch.randint(1, min(n_lat, 20) + 1, (1,), generator=g))
        scores = torch.relu(torch.randn(n_rows, n_lat, generator=g)).mul(4).round()  # [n_rows, n_lat]
        n_keep = min(kk * n_rows, n_rows * n_lat)
        assert torch.equal(batch_topk_flat(scores, n_keep, kk), want(scores, n_keep)), r


def test_encode_latents_is_encode_restricted_to_those_latents() -> None:
    for arch in ("batchtopk", "l1"):
        cc = CrossCoder(CrossCoderSpec(arch=arch, n_models=2, d_model=16, dict_size=64, k=4), seed=2)
        with torch.no_grad():
            cc.b_enc.normal_(0, 0.3)
            cc.threshold.fill_(0.2)
        x = torch.randn(200, 2, 16)  # [N, M, D] normalised
        lat = torch.tensor([0, 5, 17, 63, 40])
        with torch.no_grad():
            want = cc.encode(x)[:, lat]  # [N, S]
            got = cc.encode_latents(x, lat)
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)  # a column subset of one GEMM: rounding only
        assert torch.equal(got > 0, want > 0), arch  # the same entries kept
        assert (got > 0).any() and (got == 0).any(), arch  # the rule kept some values and dropped others
