"""Crosscoders of other codebases (core/formats.py): fixtures laid out as the reference code writes them.

References (science-of-finetuning/dictionary_learning at 173f7fa; ckkissane/crosscoder-model-diff-replication):
- dictionary_learning/dictionary.py NormalizableMixin.__init__ (buffers target_rms, activation_mean,
  activation_std, activation_global_scale), CrossCoderEncoder / CrossCoderDecoder (weight, bias),
  CrossCoder.__init__ (code_normalization_id buffer; `_hub_mixin_config["code_normalization"] = name`),
  BatchTopKCrossCoder.__init__ (k int32, threshold float32), BatchTopKCrossCoder.encode (threshold / top-k rule),
  CrossCoder.decode + NormalizableMixin.denormalize_activations (the +1e-8).
- huggingface_hub PyTorchModelHubMixin.save_pretrained (config.json of __init__ arguments + model.safetensors):
  the fixture classes below repeat DL's __init__ signatures so the real mixin writes the real config keys.
- dictionary_learning/training.py trainSAE / save_model: config.json {"trainer": trainer.config} + model_final.pt;
  dictionary_learning/trainers/crosscoder.py CrossCoderTrainer.config / BatchTopKCrossCoderTrainer.config.
- ckkissane crosscoder.py CrossCoder (W_enc, W_dec, b_enc, b_dec; load_from_hf: FOLDER/cfg.json +
  FOLDER/cc_weights.pt), train.py default_cfg keys, buffer.py estimate_norm_scaling_factor and Buffer.next.
"""

from __future__ import annotations

import json
import math
from enum import Enum, auto

import pytest
import torch
from huggingface_hub import PyTorchModelHubMixin
from safetensors.torch import load_file
from torch import Tensor, nn

from latentdiff.core.crosscoder import CrossCoder, CrossCoderSpec
from latentdiff.core.formats import (
    detect_format,
    estimate_scaling_factors,
    export_crosscoder,
    load_foreign,
    parse_hub_id,
    resolve_source,
)
from latentdiff.core.select import delta_norm
from latentdiff.errors import LatentDiffError

L, D, F, N, K = 2, 16, 64, 48, 4
TOL = 1e-5


# --------------------------------------------------------------------------- reference modules (state layout only)


class CodeNormalization(Enum):
    """dictionary.py CodeNormalization (auto() values: CROSSCODER = 1 ...)."""

    CROSSCODER = auto()
    SAE = auto()
    MIXED = auto()
    NONE = auto()
    DECOUPLED = auto()


class _Encoder(nn.Module):
    def __init__(self, num_layers: int, activation_dim: int, dict_size: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_layers, activation_dim, dict_size))
        self.bias = nn.Parameter(torch.zeros(dict_size))


class _Decoder(nn.Module):
    def __init__(self, num_layers: int, activation_dim: int, dict_size: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(num_layers, activation_dim))
        self.weight = nn.Parameter(torch.empty(num_layers, dict_size, activation_dim))


def _normalizable_buffers(mod: nn.Module, shape: tuple[int, int], target_rms: float | None) -> None:
    """NormalizableMixin.__init__ without statistics (from_pretrained fills them from the file)."""
    mod.register_buffer("target_rms", torch.tensor(1.0 if target_rms is None else target_rms))
    mod.register_buffer("activation_mean", torch.nan * torch.ones(shape))
    mod.register_buffer("activation_std", torch.nan * torch.ones(shape))
    mod.register_buffer("activation_global_scale", torch.ones(shape[:-1]))


class RefCrossCoder(nn.Module, PyTorchModelHubMixin):
    """dictionary_learning CrossCoder: same __init__ signature (the mixin's config keys), same state dict."""

    def __init__(self, activation_dim, dict_size, num_layers, same_init_for_all_layers=False,
                 norm_init_scale: float | None = None, init_with_transpose=True,
                 encoder_layers: list[int] | None = None,
                 latent_processor=None, num_decoder_layers: int | None = None,
                 code_normalization: CodeNormalization | str = CodeNormalization.CROSSCODER,
                 code_normalization_alpha_sae: float | None = 1.0, code_normalization_alpha_cc: float | None = 0.1,
                 activation_mean=None, activation_std=None, target_rms: float | None = None):
        super().__init__()
        _normalizable_buffers(self, (num_layers, activation_dim), target_rms)
        if isinstance(code_normalization, str):
            code_normalization = CodeNormalization[code_normalization.upper()]
        else:
            self._hub_mixin_config["code_normalization"] = code_normalization.name
        self.encoder = _Encoder(num_layers, activation_dim, dict_size)
        self.decoder = _Decoder(num_layers, activation_dim, dict_size)
        self.register_buffer("code_normalization_id", torch.tensor(code_normalization.value))


class RefBatchTopKCrossCoder(RefCrossCoder):
    """dictionary_learning BatchTopKCrossCoder: same __init__ signature, k and threshold buffers."""

    def __init__(self, activation_dim: int, dict_size: int, num_layers: int, k: int | Tensor = 100,
                 norm_init_scale: float = 1.0, activation_mean=None, activation_std=None,
                 target_rms: float | None = 1.0, *args, **kwargs):
        super().__init__(activation_dim, dict_size, num_layers, norm_init_scale=norm_init_scale,
                         activation_mean=activation_mean, activation_std=activation_std, target_rms=target_rms,
                         *args, **kwargs)
        if not isinstance(k, Tensor):
            k = torch.tensor(k, dtype=torch.int)
        self.register_buffer("k", k)
        decoupled = self.code_normalization_id.item() == CodeNormalization.DECOUPLED.value
        self.register_buffer("threshold", torch.tensor([-1.0] * num_layers if decoupled else -1.0))


def _fill(ref: RefCrossCoder, seed: int, normalised: bool) -> None:
    """Random trained-looking weights; per-model statistics as NormalizableMixin computes them."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        ref.encoder.weight.copy_(torch.randn(L, D, F, generator=g) / math.sqrt(D))
        ref.encoder.bias.copy_(torch.randn(F, generator=g) * 0.1)
        dec = torch.randn(L, F, D, generator=g) / math.sqrt(D)
        dec[0, :5] *= 0.05  # a few chat-only and base-only latents for Delta-norm
        dec[1, 5:10] *= 0.05
        ref.decoder.weight.copy_(dec)
        ref.decoder.bias.copy_(torch.randn(L, D, generator=g) * 0.1)
        if normalised:
            mean = torch.randn(L, D, generator=g)
            std = torch.rand(L, D, generator=g) + 0.5
            ref.activation_mean.copy_(mean)
            ref.activation_std.copy_(std)
            ref.activation_global_scale.copy_(ref.target_rms / torch.sqrt((std**2).sum(-1) + 1e-8))


def _acts(seed: int = 1) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(N, L, D, generator=g) * 2.0 + 0.5  # [N, L, D] raw activations


# --------------------------------------------------------------------------- reference forward passes (DL formulas)


def ref_normalize(sd: dict[str, Tensor], x: Tensor) -> Tensor:
    if sd["activation_mean"].isnan().any() or sd["activation_std"].isnan().any():
        return x
    return (x - sd["activation_mean"]) * sd["activation_global_scale"][None, :, None]


def ref_post_relu(sd: dict[str, Tensor], x: Tensor) -> Tensor:
    f = torch.einsum("bld,ldf->blf", ref_normalize(sd, x), sd["encoder.weight"])
    return torch.relu(f.sum(dim=1) + sd["encoder.bias"])  # [B, F]


def ref_code_norm(sd: dict[str, Tensor]) -> Tensor:
    return sd["decoder.weight"].norm(dim=2).sum(dim=0, keepdim=True)  # CROSSCODER [1, F]


def ref_encode_threshold(sd: dict[str, Tensor], x: Tensor) -> Tensor:
    post = ref_post_relu(sd, x)
    return post * (post * ref_code_norm(sd) > sd["threshold"])


def ref_encode_topk(sd: dict[str, Tensor], x: Tensor) -> Tensor:
    post = ref_post_relu(sd, x)
    scaled = (post * ref_code_norm(sd)).flatten()
    top = scaled.topk(int(sd["k"]) * x.shape[0], sorted=False, dim=-1)
    return torch.zeros_like(scaled).scatter_(-1, top.indices, post.flatten()[top.indices]).reshape(post.shape)


def ref_decode(sd: dict[str, Tensor], f: Tensor) -> Tensor:
    x = torch.einsum("bf,lfd->bld", f, sd["decoder.weight"]) + sd["decoder.bias"]
    if sd["activation_mean"].isnan().any() or sd["activation_std"].isnan().any():
        return x
    return x / (sd["activation_global_scale"][None, :, None] + 1e-8) + sd["activation_mean"]


def ref_delta_norm(dec_weight: Tensor) -> Tensor:
    """METHOD.md section 1: 0.5 * ((||d^chat|| - ||d^base||) / max + 1); layer 0 = base, 1 = chat."""
    n = dec_weight.norm(dim=-1)  # [L, F]
    return 0.5 * ((n[1] - n[0]) / torch.maximum(n[0], n[1]) + 1)


def ours(cc: CrossCoder, x: Tensor, use_threshold: bool = True) -> tuple[Tensor, Tensor, Tensor]:
    """(f, raw reconstruction, Delta-norm) through latentdiff's CrossCoder."""
    with torch.no_grad():
        xn = cc.normalize(x)
        f = cc.encode(xn, use_threshold=use_threshold)
        norms = cc.decoder_norms()
        return f, cc.denormalize(cc.decode(f)), delta_norm(norms[:, 0], norms[:, 1])


def _max(a: Tensor, b: Tensor) -> float:
    return float((a - b).abs().max())


# --------------------------------------------------------------------------- dictionary_learning -> latentdiff


def _dl_topk_fixture(tmp_path, normalised: bool = True):
    ref = RefBatchTopKCrossCoder(D, F, L, k=K, code_normalization=CodeNormalization.CROSSCODER)
    _fill(ref, seed=0, normalised=normalised)
    sd = {k: v.detach() for k, v in ref.state_dict().items()}
    scores = (ref_post_relu(sd, _acts()) * ref_code_norm(sd)).flatten()
    with torch.no_grad():
        ref.threshold.fill_(float(scores[scores > 0].quantile(0.8)))  # a trained EMA threshold
    ref.save_pretrained(tmp_path / "dl")  # config.json + model.safetensors, exactly as push_to_hub uploads
    return tmp_path / "dl", {k: v.detach().clone() for k, v in ref.state_dict().items()}


def test_dictionary_learning_hub_batchtopk_matches_reference(tmp_path):
    path, sd = _dl_topk_fixture(tmp_path)
    cfg = json.loads((path / "config.json").read_text())
    assert cfg == {"activation_dim": D, "dict_size": F, "num_layers": L, "k": K, "norm_init_scale": 1.0,
                   "activation_mean": None, "activation_std": None, "target_rms": 1.0,
                   "code_normalization": "CROSSCODER"}, cfg  # what the mixin writes for BatchTopKCrossCoder
    assert detect_format(path)[0] == "dictionary_learning"
    cc = load_foreign(path, model_names=["base", "chat"])
    assert cc.spec.arch == "batchtopk" and cc.spec.k == K and cc.spec.model_names == ["base", "chat"]
    x = _acts()
    f, recon, dn = ours(cc, x)
    f_ref = ref_encode_threshold(sd, x)
    assert 0 < (f_ref > 0).sum() < f_ref.numel() / 4  # the threshold does select
    assert _max(f, f_ref) < TOL
    assert torch.equal(f > 0, f_ref > 0)
    assert _max(recon, ref_decode(sd, f_ref)) < TOL
    assert _max(dn, ref_delta_norm(sd["decoder.weight"])) < TOL
    # training rule: BatchTopK over the batch
    with torch.no_grad():
        pre = cc.pre_acts(cc.normalize(x))
        idx = cc.select(pre, use_threshold=False)
        f_topk = torch.zeros_like(pre)
        f_topk[idx[:, 0], idx[:, 1]] = pre[idx[:, 0], idx[:, 1]]
    assert _max(f_topk, ref_encode_topk(sd, x)) < TOL


def test_dictionary_learning_training_layout_l1(tmp_path):
    """trainSAE's save_dir: config.json {"trainer": CrossCoderTrainer.config} + model_final.pt (th.save)."""
    ref = RefCrossCoder(D, F, L, code_normalization=CodeNormalization.SAE)  # L1: code norm only shapes the penalty
    _fill(ref, seed=3, normalised=False)
    out = tmp_path / "checkpoints" / "gemma-2-2b-L13-mu4.1e-02-lr1e-04"
    out.mkdir(parents=True)
    trainer_cfg = {"dict_class": "CrossCoder", "trainer_class": "CrossCoderTrainer", "activation_dim": D,
                   "dict_size": F, "lr": 1e-4, "l1_penalty": 0.041, "warmup_steps": 1000, "resample_steps": None,
                   "device": "cpu", "layer": 13, "lm_name": "gemma-2-2b-it-gemma-2-2b", "wandb_name": "L13",
                   "submodule_name": None, "use_mse_loss": False, "code_normalization": "SAE",
                   "code_normalization_alpha_sae": 1.0, "code_normalization_alpha_cc": 0.1, "target_rms": None}
    (out / "config.json").write_text(json.dumps({"trainer": trainer_cfg, "buffer": {}}, indent=4))
    torch.save(ref.state_dict(), out / "model_final.pt")
    sd = {k: v.detach() for k, v in ref.state_dict().items()}
    cc = load_foreign(out)
    assert cc.spec.arch == "l1"
    x = _acts(2)
    f, recon, dn = ours(cc, x)
    f_ref = ref_post_relu(sd, x)  # CrossCoder.encode: ReLU, no threshold
    assert _max(f, f_ref) < TOL and _max(recon, ref_decode(sd, f_ref)) < TOL
    assert _max(dn, ref_delta_norm(sd["decoder.weight"])) < TOL
    # the weights file directly, and one saved under torch.compile without code_normalization_id (older DL)
    old = {f"_orig_mod.{k}": v for k, v in ref.state_dict().items() if k != "code_normalization_id"}
    torch.save(old, tmp_path / "old.pt")
    assert _max(ours(load_foreign(tmp_path / "old.pt"), x)[1], recon) < TOL


# --------------------------------------------------------------------------- ckkissane -> latentdiff


def _ck_fixture(tmp_path):
    g = torch.Generator().manual_seed(5)
    state = {"W_enc": torch.randn(2, D, F, generator=g) / math.sqrt(D),
             "W_dec": torch.randn(F, 2, D, generator=g) * 0.1,
             "b_enc": torch.randn(F, generator=g) * 0.1, "b_dec": torch.randn(2, D, generator=g) * 0.1}
    cfg = {"seed": 49, "batch_size": 4096, "buffer_mult": 128, "lr": 5e-5, "num_tokens": 400_000_000, "l1_coeff": 2,
           "beta1": 0.9, "beta2": 0.999, "d_in": D, "dict_size": F, "seq_len": 1024, "enc_dtype": "fp32",
           "model_name": "gemma-2-2b", "site": "resid_pre", "device": "cuda:0", "model_batch_size": 4,
           "log_every": 100, "save_every": 30000, "dec_init_norm": 0.08, "hook_point": "blocks.14.hook_resid_pre",
           "wandb_project": "YOUR_WANDB_PROJECT", "wandb_entity": "YOUR_WANDB_ENTITY"}  # train.py default_cfg
    folder = tmp_path / "ck" / "blocks.14.hook_resid_pre"
    folder.mkdir(parents=True)
    torch.save(state, folder / "cc_weights.pt")
    (folder / "cfg.json").write_text(json.dumps(cfg))
    return folder, state


def ref_ck(state: dict[str, Tensor], x: Tensor, factors: Tensor) -> tuple[Tensor, Tensor]:
    """crosscoder.py encode/decode on Buffer.next's scaled input; reconstruction mapped back to raw."""
    xs = x * factors[None, :, None]
    acts = torch.relu(torch.einsum("bmd,mdh->bh", xs, state["W_enc"]) + state["b_enc"])
    recon = torch.einsum("bh,hmd->bmd", acts, state["W_dec"]) + state["b_dec"]
    return acts, recon / factors[None, :, None]


def test_ckkissane_layout_with_estimated_scales(tmp_path):
    folder, state = _ck_fixture(tmp_path)
    x = _acts(4)
    with pytest.raises(LatentDiffError, match="cc_weights.pt: ckkissane crosscoders do not store"):
        load_foreign(folder)
    factors = estimate_scaling_factors(x)
    assert torch.allclose(factors, math.sqrt(D) / x.norm(dim=-1).mean(0))  # sqrt(d_model) / mean_norm
    cc = load_foreign(folder, fmt="ckkissane", sample=x)
    f, recon, dn = ours(cc, x)
    acts_ref, recon_ref = ref_ck(state, x, factors)
    assert _max(f, acts_ref) < TOL and _max(recon, recon_ref) < TOL
    assert _max(dn, ref_delta_norm(state["W_dec"].permute(1, 0, 2))) < TOL
    # the local save layout (N.pt + N_cfg.json) with explicit factors
    local = tmp_path / "version_0"
    local.mkdir()
    torch.save(state, local / "3.pt")
    (local / "3_cfg.json").write_text((folder / "cfg.json").read_text())
    assert _max(ours(load_foreign(local, scales=factors), x)[1], recon_ref) < TOL


# --------------------------------------------------------------------------- latentdiff -> export -> import


def _ours_cc(arch: str) -> CrossCoder:
    spec = CrossCoderSpec(arch=arch, n_models=2, d_model=D, dict_size=F, k=K, n_shared=3, model_names=["base", "chat"])
    cc = CrossCoder(spec, seed=7)
    g = torch.Generator().manual_seed(8)
    with torch.no_grad():
        cc.W_dec.mul_(torch.rand(F, 2, 1, generator=g) + 0.05)
        cc.b_enc.copy_(torch.randn(F, generator=g) * 0.1)
        cc.b_dec.copy_(torch.randn(2, D, generator=g) * 0.1)
        cc.act_mean.copy_(torch.randn(2, D, generator=g))
        cc.act_scale.copy_(torch.tensor([0.7, 1.3]))
        scores = cc.pre_acts(cc.normalize(_acts())) * cc.decoder_norms().sum(-1)
        cc.threshold.fill_(float(scores[scores > 0].quantile(0.7)))
    return cc


@pytest.mark.parametrize("arch", ["batchtopk", "l1"])
def test_export_dictionary_learning_round_trip(tmp_path, arch):
    cc = _ours_cc(arch)
    weights = export_crosscoder(cc, "dictionary_learning", tmp_path / "out")
    assert weights.name == "model.safetensors" and (tmp_path / "out" / "trainer_config.json").is_file()
    # the reference class loads it as PyTorchModelHubMixin.from_pretrained does: cls(**config.json) + the weights
    ref_cls = RefBatchTopKCrossCoder if arch == "batchtopk" else RefCrossCoder
    ref = ref_cls.from_pretrained(tmp_path / "out")
    sd = load_file(str(weights))
    assert {k: (tuple(v.shape), v.dtype) for k, v in ref.state_dict().items()} == {
        k: (tuple(v.shape), v.dtype) for k, v in sd.items()}
    x = _acts(6)
    f0, recon0, dn0 = ours(cc, x)
    f_ref = ref_encode_threshold(sd, x) if arch == "batchtopk" else ref_post_relu(sd, x)
    assert _max(f0, f_ref) < TOL and _max(recon0, ref_decode(sd, f_ref)) < TOL
    back = load_foreign(tmp_path / "out")
    assert back.spec.model_names == ["base", "chat"] and back.spec.arch == arch
    f1, recon1, dn1 = ours(back, x)
    assert _max(f1, f0) < TOL and _max(recon1, recon0) < TOL and _max(dn1, dn0) < TOL


def test_export_ckkissane_round_trip_folds_the_mean(tmp_path):
    cc = _ours_cc("l1")
    weights = export_crosscoder(cc, "ckkissane", tmp_path / "ck")
    assert weights.name == "cc_weights.pt"
    state = torch.load(weights, weights_only=True)
    cfg = json.loads((tmp_path / "ck" / "cfg.json").read_text())
    x = _acts(9)
    f0, recon0, dn0 = ours(cc, x)
    acts_ref, recon_ref = ref_ck(state, x, torch.tensor(cfg["latentdiff_scaling_factors"]))
    assert _max(f0, acts_ref) < TOL and _max(recon0, recon_ref) < TOL
    f1, recon1, dn1 = ours(load_foreign(tmp_path / "ck"), x)
    assert _max(f1, f0) < TOL and _max(recon1, recon0) < TOL and _max(dn1, dn0) < TOL
    with pytest.raises(LatentDiffError, match="L1 crosscoder of 2 models"):
        export_crosscoder(_ours_cc("batchtopk"), "ckkissane", tmp_path / "no")


# --------------------------------------------------------------------------- errors


def _one_line_naming(err: pytest.ExceptionInfo, name: str) -> None:
    msg = str(err.value)
    assert "\n" not in msg and name in msg, msg


def test_unknown_or_malformed_layouts_are_one_line_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("hi")
    with pytest.raises(LatentDiffError) as err:
        load_foreign(tmp_path / "empty")
    _one_line_naming(err, str(tmp_path / "empty"))
    (tmp_path / "junk.pt").write_bytes(b"not a zip at all")
    with pytest.raises(LatentDiffError) as err:
        load_foreign(tmp_path / "junk.pt")
    _one_line_naming(err, "junk.pt")
    torch.save({"weight": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(LatentDiffError) as err:
        load_foreign(tmp_path / "other.pt")
    _one_line_naming(err, "other.pt")
    path, _ = _dl_topk_fixture(tmp_path)
    (path / "config.json").write_text("{ not json")
    with pytest.raises(LatentDiffError) as err:
        load_foreign(path)
    _one_line_naming(err, "config.json")
    with pytest.raises(LatentDiffError) as err:
        load_foreign(path, fmt="ckkissane")
    _one_line_naming(err, str(path))


def test_batchtopk_with_other_code_normalisation_is_refused(tmp_path):
    ref = RefBatchTopKCrossCoder(D, F, L, k=K, code_normalization=CodeNormalization.DECOUPLED)
    _fill(ref, seed=1, normalised=False)
    ref.save_pretrained(tmp_path / "dec")
    with pytest.raises(LatentDiffError) as err:
        load_foreign(tmp_path / "dec")
    _one_line_naming(err, "model.safetensors")
    assert "DECOUPLED" in str(err.value)
    sd = load_file(str(tmp_path / "dec" / "model.safetensors"))
    sd["decoder.weight"] = sd["decoder.weight"][:, :-1]
    torch.save(sd, tmp_path / "bad_shape.pt")
    with pytest.raises(LatentDiffError, match=r"bad_shape.pt: decoder.weight has shape"):
        load_foreign(tmp_path / "bad_shape.pt")


def test_hub_ids(tmp_path):
    assert parse_hub_id("hub:science-of-finetuning/gemma-2-2b-L13-k100-lr1e-04-local-shuffling-CCLoss") == (
        "science-of-finetuning/gemma-2-2b-L13-k100-lr1e-04-local-shuffling-CCLoss", None, None)
    assert parse_hub_id("hub:ckkissane/crosscoder-gemma-2-2b-model-diff/blocks.14.hook_resid_pre@main") == (
        "ckkissane/crosscoder-gemma-2-2b-model-diff", "blocks.14.hook_resid_pre", "main")
    assert resolve_source(tmp_path) == tmp_path
    with pytest.raises(LatentDiffError) as err:  # offline, empty cache: no network call
        resolve_source("hub:someone/missing-crosscoder", cache_dir=tmp_path / "hf", local_files_only=True)
    _one_line_naming(err, "hub:someone/missing-crosscoder")
