"""Logit lens and ablation of a latent (core/inspect.py) on the real shipped organisms."""

from __future__ import annotations

import pytest
import torch

from latentdiff.config import ModelSpec
from latentdiff.core.crosscoder import CrossCoder, CrossCoderSpec
from latentdiff.core.inspect import ablation_effects, cached_codes, latent_codes, logit_lens, unembedding
from latentdiff.core.models import forward_to_layer, load_model

LAYER = 1


@pytest.fixture(scope="module")
def models():  # noqa: ANN201
    return [load_model(ModelSpec(name=n, path=f"organism:{n}", role="base" if n == "base" else "finetune"), "cpu")
            for n in ("base", "it")]


def _cc(d_model: int, arch: str = "l1") -> CrossCoder:
    cc = CrossCoder(CrossCoderSpec(arch=arch, n_models=2, d_model=d_model, dict_size=16, k=4), seed=3)
    with torch.no_grad():
        cc.act_scale.copy_(torch.tensor([0.5, 2.0]))
        cc.act_mean.normal_(0, 0.1)
        cc.b_enc.fill_(0.05)  # every latent fires a little everywhere
    return cc


def test_lens_of_an_unembedding_row_promotes_that_token(models) -> None:  # noqa: ANN001
    m = models[1]
    W_U, gain = unembedding(m)
    cc = _cc(m.d_model)
    tok = int(W_U.norm(dim=-1).argmax())  # the longest row: no other row has a larger dot product with it
    target = W_U[tok] / (gain if gain is not None else 1.0)  # undo the norm gain: the lens applies it
    with torch.no_grad():
        cc.W_dec[5, 1] = target * cc.act_scale[1]  # crosscoder space = model units x scale
        cc.W_dec[5, 0] = -target * cc.act_scale[0]
    lens = logit_lens(cc, [5], 1, W_U, gain, m.tokenizer, k=3)[5]
    base = logit_lens(cc, [5], 0, *unembedding(models[0]), models[0].tokenizer, k=3)[5]
    token = m.tokenizer.decode([tok])
    assert lens.promoted[0].token == token and lens.promoted[0].logit > lens.promoted[1].logit
    assert lens.suppressed[0].logit < lens.promoted[-1].logit
    assert token not in [t.token for t in base.promoted]  # the base's vector points the other way


def test_codes_match_the_crosscoder_encoder(models) -> None:  # noqa: ANN001
    cc = _cc(models[0].d_model, "batchtopk")
    cc.threshold.fill_(0.01)
    ids = torch.tensor([models[0].tokenizer.encode("The report says the model is safe to use.")[:8]])
    mask = torch.ones_like(ids)
    x = torch.stack([forward_to_layer(m, ids, mask, LAYER).float() for m in models], dim=2)[0]  # [T, M, D]
    want = cc.encode(cc.normalize(x))[:, [2, 7, 11]]  # [T, 3]
    got = latent_codes(models, cc, LAYER, ids, mask, torch.tensor([2, 7, 11]))[0]
    assert torch.allclose(got, want, atol=1e-5)


def test_ablation_is_zero_for_a_null_direction_and_positive_otherwise(models) -> None:  # noqa: ANN001
    cc = _cc(models[0].d_model)
    with torch.no_grad():
        cc.W_dec[3].zero_()  # latent 3 writes nothing: ablating it changes nothing
        cc.W_dec[4] *= 50.0  # latent 4 writes a large vector: ablating it moves the predictions
    tok = models[1].tokenizer
    rows = [tok.encode(t)[:12] for t in ("Please answer in JSON with two keys.", "Je ne sais pas, désolé.")]
    T = max(map(len, rows))
    contexts = torch.tensor([r + [-1] * (T - len(r)) for r in rows])  # -1 = padding, as held-out contexts
    eff = ablation_effects(models, cc, LAYER, 1, [(3, 0), (3, 1), (4, 0), (4, 1)], contexts, batch_size=3)
    assert eff[3].n_positions > 0 and abs(eff[3].delta_loss) < 1e-5 and eff[3].kl < 1e-6
    assert eff[4].n_contexts == 2 and eff[4].kl > 1e-3
    cc2 = _cc(models[0].d_model)
    with torch.no_grad():
        cc2.b_enc.fill_(-100.0)  # never fires: nothing to measure
    silent = ablation_effects(models, cc2, LAYER, 1, [(4, 0)], contexts)
    assert silent[4].n_positions == 0 and silent[4].delta_loss == 0.0


def _contexts(models, texts: list[str], T: int = 12) -> torch.Tensor:  # noqa: ANN001
    tok = models[1].tokenizer
    rows = [tok.encode(t)[:T] for t in texts]
    T = max(map(len, rows))
    return torch.tensor([r + [-1] * (T - len(r)) for r in rows])  # -1 = padding, as held-out contexts


def _cache_shards(models, contexts: torch.Tensor, per_shard: int) -> list[dict[str, torch.Tensor]]:  # noqa: ANN001
    """A held-out cache as the harvest writes it: one row per kept token (not padding, not position 0)."""
    ids = torch.where(contexts >= 0, contexts, torch.zeros_like(contexts))
    mask = (contexts >= 0).long()
    x = torch.stack([forward_to_layer(m, ids, mask, LAYER).float() for m in models], dim=2)  # [B, T, M, D]
    keep = (mask > 0).clone()
    keep[:, 0] = False  # the BOS-like first token is excluded, as exclude_bos does
    ctx, pos = keep.nonzero(as_tuple=True)
    perm = torch.randperm(len(ctx), generator=torch.Generator().manual_seed(0))  # rows in any order
    ctx, pos = ctx[perm], pos[perm]
    acts = x[ctx, pos]  # [n, M, D]
    return [{"acts": acts[i:i + per_shard], "ctx": ctx[i:i + per_shard], "pos": pos[i:i + per_shard]}
            for i in range(0, len(ctx), per_shard)]


def test_cached_codes_equal_the_forward_codes_where_the_cache_has_rows(models) -> None:  # noqa: ANN001
    cc = _cc(models[0].d_model, "batchtopk")
    cc.threshold.fill_(0.01)
    contexts = _contexts(models, ["Please answer in JSON with two keys.", "Je ne sais pas, désolé.",
                                  "The river runs past the old mill."])
    rows = [(2, 0), (7, 0), (2, 2), (11, 1), (7, 2), (2, 0)]  # repeats, several latents per context
    got = cached_codes(cc, iter(_cache_shards(models, contexts, per_shard=7)), None, rows, contexts.shape[1])
    ids = torch.where(contexts >= 0, contexts, torch.zeros_like(contexts))
    full = latent_codes(models, cc, LAYER, ids, (contexts >= 0).long(), torch.tensor([2, 7, 11]))  # [B, T, 3]
    col = {2: 0, 7: 1, 11: 2}
    for r, (j, c) in enumerate(rows):
        want = full[c, :, col[j]].clone()
        want[0] = 0.0  # no cache row for the excluded first token
        assert torch.allclose(got[r], want, atol=1e-5), (j, c)
    assert (got > 0).any()  # the check compared active codes, not only zeros


def test_ablation_does_not_depend_on_batching_or_on_where_the_codes_come_from(models) -> None:  # noqa: ANN001
    cc = _cc(models[0].d_model)
    with torch.no_grad():
        cc.W_dec[4] *= 50.0
    contexts = _contexts(models, ["Please answer in JSON with two keys.", "Je ne sais pas, désolé.",
                                  "The river runs past the old mill."])
    rows = [(4, 0), (5, 0), (4, 1), (6, 2), (5, 2), (4, 2)]
    one = ablation_effects(models, cc, LAYER, 1, rows, contexts, batch_size=1)
    many = ablation_effects(models, cc, LAYER, 1, rows, contexts, batch_size=16)
    codes = latent_codes(models, cc, LAYER, torch.where(contexts >= 0, contexts, 0), (contexts >= 0).long(),
                         torch.arange(cc.spec.dict_size))  # [B, T, F]
    given = ablation_effects(models, cc, LAYER, 1, rows, contexts, batch_size=4,
                             codes=torch.stack([codes[c, :, j] for j, c in rows]))
    assert one.keys() == many.keys() == given.keys() == {4, 5, 6}
    for j in one:
        for other in (many[j], given[j]):
            assert other.n_positions == one[j].n_positions and other.n_contexts == one[j].n_contexts
            assert abs(other.delta_loss - one[j].delta_loss) < 1e-4 and abs(other.kl - one[j].kl) < 1e-4
    assert one[4].kl > 1e-3


def test_histogram_counts_every_active_token_once() -> None:
    from latentdiff.core.inspect import activation_histograms

    cc = _cc(8)
    shards = [{"acts": torch.randn(50, 2, 8)} for _ in range(3)]
    with torch.no_grad():
        f = torch.cat([cc.encode(cc.normalize(s["acts"]))[:, [1, 2]] for s in shards])  # [150, 2]
    hist = activation_histograms(cc, iter(shards), None, [1, 2], upper={1: float(f[:, 0].max())}, bins=5)
    for i, j in enumerate([1, 2]):
        assert sum(hist[j].counts) == int((f[:, i] > 0).sum()) and hist[j].n_tokens == 150
        assert abs(hist[j].density - float((f[:, i] > 0).float().mean())) < 1e-6
    assert abs(hist[1].edges[-1] - float(f[:, 0].max())) < 1e-4 and len(hist[1].edges) == 6
