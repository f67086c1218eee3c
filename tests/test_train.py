"""Crosscoder training: resume after interruption reproduces the uninterrupted run; metrics logged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from latentdiff.config import CrosscoderConfig
from latentdiff.core.cache import Manifest, ShardWriter, ShuffledStream, read_manifest
from latentdiff.core.crosscoder import CrossCoder, CrossCoderSpec
from latentdiff.core.harvest import compute_stats
from latentdiff.core.train import Trainer, current_k, learning_rate


def _fake_cache(path: Path, n_ctx: int = 40, ctx_len: int = 16, M: int = 2, D: int = 8) -> None:
    gen = torch.Generator().manual_seed(0)
    manifest = Manifest(
        models=["a", "b"], layer=1, d_model=D, dtype="float32", n_contexts=n_ctx, ctx_len=ctx_len
    )
    writer = ShardWriter(path, manifest, shard_tokens=100)
    basis = torch.randn(12, M, D, generator=gen)
    for c in range(n_ctx):
        f = torch.rand(ctx_len, 12, generator=gen) * (torch.rand(ctx_len, 12, generator=gen) < 0.2)
        acts = torch.einsum("nf,fmd->nmd", f, basis) + 3.0
        writer.add(acts, torch.full((ctx_len,), c), torch.arange(ctx_len), ctx_end=c + 1)
    writer.flush(n_ctx)
    manifest.complete = True
    writer.write_manifest()


def _trainer(tmp: Path, cache: Path, cfg: CrosscoderConfig) -> Trainer:
    mean, scale = compute_stats(cache)
    spec = CrossCoderSpec(
        arch=cfg.arch, n_models=2, d_model=8, dict_size=cfg.dict_size, k=cfg.k, model_names=["a", "b"]
    )
    return Trainer(cfg, spec, mean, scale, tmp, torch.device("cpu"))


class _Killed(Exception):
    pass


@pytest.mark.parametrize("arch", ["batchtopk", "l1"])
def test_resume_gives_same_weights(tmp_path: Path, arch: str) -> None:
    cache = tmp_path / "cache"
    _fake_cache(cache)
    cfg = CrosscoderConfig(
        arch=arch,
        dict_size=32,
        k=4,
        batch_size=64,
        steps=30,
        checkpoint_every=10,
        warmup_steps=5,
        dead_tokens=200,
        lr=1e-3,
        l1_warmup_steps=5,
    )
    stream = ShuffledStream(cache, cfg.batch_size, seed=1, window_shards=2)
    full = _trainer(tmp_path / "full", cache, cfg).fit(stream.batches, show=False)

    def dying(start: int):
        for i, b in enumerate(stream.batches(start)):
            if i == 15:
                raise _Killed
            yield b

    with pytest.raises(_Killed):
        _trainer(tmp_path / "resumed", cache, cfg).fit(dying, show=False)
    assert (tmp_path / "resumed" / "checkpoint.pt").is_file()
    resumed = _trainer(tmp_path / "resumed", cache, cfg).fit(stream.batches, show=False)
    for (name, a), (_, b) in zip(full.state_dict().items(), resumed.state_dict().items()):
        torch.testing.assert_close(a, b, msg=f"{name} differs after resume")
    lines = [json.loads(x) for x in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [10, 20, 30]
    assert {"fvu_a", "fvu_b", "l0", "dead_frac", "auxk"} <= set(lines[-1])
    again = CrossCoder.from_pretrained(tmp_path / "resumed")
    torch.testing.assert_close(again.W_dec, resumed.W_dec)
    assert not (tmp_path / "resumed" / "checkpoint.pt").exists()


def test_training_reduces_fvu_and_sets_threshold(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    _fake_cache(cache, n_ctx=80)
    cfg = CrosscoderConfig(
        dict_size=32,
        k=4,
        batch_size=128,
        steps=150,
        checkpoint_every=1000,
        warmup_steps=10,
        lr=3e-3,
        dead_tokens=500,
    )
    cc = _trainer(tmp_path / "cc", cache, cfg).fit(ShuffledStream(cache, 128, seed=0).batches, show=False)
    lines = [json.loads(x) for x in (tmp_path / "cc" / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["fvu_a"] < 0.5 * lines[0]["fvu_a"]
    assert float(cc.threshold) > 0
    assert read_manifest(cache).n_tokens == 80 * 16


def test_schedules() -> None:
    cfg = CrosscoderConfig(
        lr=1.0, warmup_steps=10, steps=100, decay_start=0.8, k=10, k_start=50, k_anneal_steps=40
    )
    assert learning_rate(cfg, 0) == pytest.approx(0.1)
    assert learning_rate(cfg, 50) == 1.0 and learning_rate(cfg, 90) == pytest.approx(0.5)
    assert current_k(cfg, 0) == 50 and current_k(cfg, 20) == 30 and current_k(cfg, 99) == 10


def test_resume_lays_optimizer_moments_out_like_their_parameters(tmp_path: Path) -> None:
    """torch's fused Adam walks a parameter and its moments as flat memory: a checkpoint whose moments
    have other strides than the parameters (written gathered from sharded ranks, or by a version with a
    permuted W_dec) must be laid out like the parameters on load, or the resumed run takes wrong steps."""
    cache = tmp_path / "cache"
    _fake_cache(cache)
    cfg = CrosscoderConfig(dict_size=32, k=4, batch_size=64, steps=12, warmup_steps=2, checkpoint_every=6)
    stream = ShuffledStream(cache, cfg.batch_size, seed=0)

    def run(out: Path, steps: int) -> Trainer:
        tr = _trainer(out, cache, cfg)
        tr.load_checkpoint()
        batches = stream.batches(tr.step)
        while tr.step < steps:
            tr.train_step(next(batches))
        return tr

    whole = run(tmp_path / "whole", 12)
    part = run(tmp_path / "part", 6)
    assert part.opt.param_groups[0]["fused"]  # the fused kernel is the one with this hazard
    part.save_checkpoint()
    ckpt = torch.load(part.ckpt_path, weights_only=False)
    for entry in ckpt["opt"]["state"].values():  # another layout, same values
        for key in ("exp_avg", "exp_avg_sq"):
            v = entry[key]
            if v.dim() >= 2:
                entry[key] = v.transpose(0, 1).contiguous().transpose(0, 1)
                assert entry[key].stride() != v.stride()
    enc = ckpt["opt"]["state"][0]  # the encoder's moments as checkpoints before session 8 held them: [M, D, F]
    assert enc["exp_avg"].shape == part.cc.W_enc_t.shape
    enc["exp_avg"] = enc["exp_avg"].permute(1, 2, 0).contiguous()
    enc["exp_avg_sq"] = enc["exp_avg_sq"].permute(1, 2, 0)
    torch.save(ckpt, part.ckpt_path)
    resumed = run(tmp_path / "part", 12)
    for (name, a), (_, b) in zip(whole.cc.state_dict().items(), resumed.cc.state_dict().items()):
        assert torch.equal(a, b), name
