"""Crosscoders from and to other codebases: dictionary_learning (science-of-finetuning) and ckkissane.

Layouts read (every name below is copied from the reference source):

dictionary_learning, science-of-finetuning/dictionary_learning:dictionary_learning/dictionary.py
    state dict of `CrossCoder` / `BatchTopKCrossCoder` (L = models, D = d_model, F = dict size):
        encoder.weight [L, D, F]   encoder.bias [F]        (CrossCoderEncoder)
        decoder.weight [L, F, D]   decoder.bias [L, D]     (CrossCoderDecoder)
        code_normalization_id []   int64, CodeNormalization enum value (CROSSCODER = 1, SAE, MIXED, NONE, DECOUPLED)
        target_rms [], activation_mean [L, D], activation_std [L, D], activation_global_scale [L]
                                   (NormalizableMixin; NaN mean/std = no normalisation)
        k [] int32, threshold [] float32 ([L] under DECOUPLED)       (BatchTopKCrossCoder only)
    encode: x' = (x - activation_mean) * activation_global_scale; f = ReLU(sum_l x'^l W_enc^l + b_enc);
            BatchTopK at inference keeps f_j where f_j * sum_l ||d_j^l|| > threshold (CROSSCODER).
    decode: x_hat = (sum_j f_j d_j^l + b_dec^l) / (activation_global_scale + 1e-8) + activation_mean.
  Two directory layouts:
    hub      `model.safetensors` + `config.json` (huggingface_hub PyTorchModelHubMixin.save_pretrained: the
             __init__ arguments, e.g. activation_dim, dict_size, num_layers, k, code_normalization), and
             `trainer_config.json` when pushed by sparsity-artifacts-crosscoders:tools/cc_utils.py
             push_dictionary_model (e.g. science-of-finetuning/gemma-2-2b-L13-k100-lr1e-04-local-shuffling-CCLoss).
    training `model_final.pt` / `checkpoint_N.pt` (torch.save of the state dict) + `config.json` =
             {"trainer": trainer.config, "buffer": ...} (dictionary_learning/training.py trainSAE, save_model).

ckkissane, ckkissane/crosscoder-model-diff-replication:crosscoder.py CrossCoder (2 models, an L1 crosscoder):
        W_enc [M, D, F], W_dec [F, M, D], b_enc [F], b_dec [M, D]; cfg json with d_in, dict_size, enc_dtype, ...
    hub `<folder>/cfg.json` + `<folder>/cc_weights.pt` (CrossCoder.load_from_hf); local `N.pt` + `N_cfg.json` (save).
    Inputs are multiplied by per-model factors sqrt(D) / mean ||x^m|| (buffer.py estimate_norm_scaling_factor)
    that the files do not store: pass `scales`, or a `sample` of raw activations to estimate them on.

latentdiff's CrossCoder holds the same maps: W_enc = encoder.weight, W_dec = decoder.weight permuted to
[F, M, D], act_mean = activation_mean, act_scale = activation_global_scale (ckkissane: the factors, mean 0).
Not representable (a one-line error says so): BatchTopK under SAE / MIXED / NONE / DECOUPLED code
normalisation (latentdiff's threshold scores f_j * sum_m ||d_j^m||, i.e. CROSSCODER), encoder_layers subsets.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from latentdiff.core.crosscoder import CrossCoder, CrossCoderSpec
from latentdiff.errors import LatentDiffError
from latentdiff.io import atomic_write, atomic_write_json

log = logging.getLogger(__name__)

Format = Literal["latentdiff", "dictionary_learning", "ckkissane"]
FORMATS: tuple[str, ...] = ("latentdiff", "dictionary_learning", "ckkissane")
# dictionary_learning CodeNormalization(Enum) with auto(): CROSSCODER = 1, SAE = 2, MIXED = 3, NONE = 4, DECOUPLED = 5
CODE_NORMALIZATION = {1: "CROSSCODER", 2: "SAE", 3: "MIXED", 4: "NONE", 5: "DECOUPLED"}
DL_KEYS = ("encoder.weight", "encoder.bias", "decoder.weight", "decoder.bias")
CK_KEYS = ("W_enc", "W_dec", "b_enc", "b_dec")


class ForeignFormatError(LatentDiffError):
    """A crosscoder file of another codebase that is missing, malformed or not representable; names the file."""


# --------------------------------------------------------------------------- reading files


def _read_state(path: Path) -> dict[str, Tensor]:
    """Tensors of a .safetensors or .pt file (torch.load with weights_only: no code runs)."""
    try:
        if path.suffix == ".safetensors":
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ForeignFormatError(f"{path}: missing crosscoder weights") from None
    except Exception as err:  # safetensors / pickle / zip errors all mean "not a weights file"
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
        raise ForeignFormatError(f"{path}: not a readable weights file ({first})") from None
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ForeignFormatError(f"{path}: not a state dict of tensors")
    if state and all(k.startswith("_orig_mod.") for k in state):  # saved under torch.compile (DL strips it too)
        state = {k.split("_orig_mod.", 1)[1]: v for k, v in state.items()}
    return state


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ForeignFormatError(f"{path}: missing config") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ForeignFormatError(f"{path}: not valid JSON ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ForeignFormatError(f"{path}: config is not a JSON object")
    return data


def _numbered(directory: Path, pattern: str) -> Path | None:
    """The file in `directory` matching `pattern` (one group: an integer) with the highest number."""
    hits = [(int(m.group(1)), p) for p in directory.iterdir() if (m := re.fullmatch(pattern, p.name))]
    return max(hits)[1] if hits else None


def detect_format(path: str | Path) -> tuple[Format, Path]:
    """(format, weights file) of a crosscoder directory or weights file; unknown layouts raise, naming the path."""
    path = Path(path)
    if path.is_dir():
        if (path / "crosscoder.safetensors").is_file() and (path / "cfg.json").is_file():
            return "latentdiff", path / "crosscoder.safetensors"
        for name in ("model.safetensors", "model_final.pt"):
            if (path / name).is_file():
                return "dictionary_learning", path / name
        if (path / "cc_weights.pt").is_file():
            return "ckkissane", path / "cc_weights.pt"
        if (ck := _numbered(path, r"(\d+)\.pt")) is not None and (path / f"{ck.stem}_cfg.json").is_file():
            return "ckkissane", ck
        if (dl := _numbered(path, r"checkpoint_(\d+)\.pt")) is not None:
            return "dictionary_learning", dl
        names = sorted(p.name for p in path.iterdir())[:8]
        raise ForeignFormatError(
            f"{path}: no crosscoder layout found (expected model.safetensors + config.json, model_final.pt, "
            f"cc_weights.pt + cfg.json, or cfg.json + crosscoder.safetensors; found {names})"
        )
    if not path.is_file():
        raise ForeignFormatError(f"{path}: no such file or directory")
    if path.suffix not in (".pt", ".safetensors", ".pth", ".bin"):
        raise ForeignFormatError(f"{path}: not a weights file (.pt or .safetensors)")
    keys = set(_read_state(path))
    if set(DL_KEYS) <= keys:
        return "dictionary_learning", path
    if set(CK_KEYS) <= keys:
        return "ckkissane", path
    raise ForeignFormatError(
        f"{path}: unknown crosscoder state dict (neither {'/'.join(DL_KEYS[:2])}... nor {'/'.join(CK_KEYS)}; "
        f"keys {sorted(keys)[:6]})"
    )


# --------------------------------------------------------------------------- hub ids


def parse_hub_id(spec: str) -> tuple[str, str | None, str | None]:
    """'hub:OWNER/NAME[/FOLDER...][@REV]' -> (repo_id, folder or None, revision or None)."""
    body = spec.removeprefix("hub:")
    body, _, rev = body.partition("@")
    parts = [p for p in body.split("/") if p]
    if len(parts) < 2:
        raise ForeignFormatError(f"{spec}: not a hub id (expected hub:OWNER/NAME[/FOLDER][@REVISION])")
    return "/".join(parts[:2]), "/".join(parts[2:]) or None, rev or None


def resolve_source(spec: str | Path, cache_dir: str | Path | None = None, local_files_only: bool | None = None) -> Path:
    """A local path as is; 'hub:REPO[/FOLDER][@REV]' downloaded through huggingface_hub (its cache, HF_HUB_OFFLINE)."""
    if not str(spec).startswith("hub:"):
        return Path(spec)
    from huggingface_hub import constants, snapshot_download

    repo_id, folder, revision = parse_hub_id(str(spec))
    offline = constants.HF_HUB_OFFLINE if local_files_only is None else local_files_only
    try:
        root = snapshot_download(
            repo_id, revision=revision, cache_dir=cache_dir, local_files_only=offline,
            allow_patterns=[f"{folder}/*"] if folder else None,
        )
    except Exception as err:  # network, auth, missing repo or not in the offline cache
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise ForeignFormatError(f"{spec}: cannot fetch from the HF hub ({first})") from None
    return Path(root) / folder if folder else Path(root)


# --------------------------------------------------------------------------- loading


def load_foreign(
    path: str | Path,
    fmt: Format | Literal["auto"] = "auto",
    *,
    model_names: Sequence[str] | None = None,
    scales: Sequence[float] | Tensor | None = None,
    sample: Tensor | None = None,
) -> CrossCoder:
    """Load a crosscoder saved by dictionary_learning, ckkissane or latentdiff as a latentdiff CrossCoder.

    path: directory, weights file or 'hub:REPO[/FOLDER][@REV]'. model_names: the M models in the
    crosscoder's order (dictionary_learning's layer 0 / ckkissane's model A is the base).
    ckkissane only: `scales` [M], else factors stored by `export_crosscoder`, else estimated on `sample`
    [N, M, D] of raw activations (`estimate_scaling_factors`).
    """
    path = resolve_source(path)
    found, weights = detect_format(path)
    if fmt != "auto" and fmt != found:
        raise ForeignFormatError(f"{path}: looks like a {found} crosscoder, not {fmt}")
    if found == "latentdiff":
        cc = CrossCoder.from_pretrained(path)
    elif found == "dictionary_learning":
        cc = _load_dictionary_learning(weights)
    else:
        cc = _load_ckkissane(weights, scales, sample)
    if model_names is not None:
        if len(model_names) != cc.spec.n_models:
            raise ForeignFormatError(
                f"{weights}: holds {cc.spec.n_models} models, but {len(model_names)} names were given"
            )
        cc.spec = cc.spec.model_copy(update={"model_names": list(model_names)})
    return cc.eval()


def _dl_configs(weights: Path) -> tuple[dict, dict]:
    """(hub config, trainer config) beside a dictionary_learning weights file; either may be empty."""
    hub, trainer = {}, {}
    if (weights.parent / "config.json").is_file():
        cfg = _read_json(weights.parent / "config.json")
        if isinstance(cfg.get("trainer"), dict):
            trainer = cfg["trainer"]  # training layout: {"trainer": ..., "buffer": ...}
        else:
            hub = cfg  # PyTorchModelHubMixin: the __init__ arguments
    if (weights.parent / "trainer_config.json").is_file():
        trainer = _read_json(weights.parent / "trainer_config.json").get("trainer", {}) or trainer
    return hub, trainer


def _shape_error(weights: Path, name: str, got: Tensor, want: tuple[int, ...]) -> ForeignFormatError:
    return ForeignFormatError(f"{weights}: {name} has shape {list(got.shape)}, expected {list(want)}")


def _load_dictionary_learning(weights: Path) -> CrossCoder:
    """dictionary_learning CrossCoder / BatchTopKCrossCoder -> CrossCoder (see the module docstring)."""
    state = _read_state(weights)
    missing = [k for k in DL_KEYS if k not in state]
    if missing:
        raise ForeignFormatError(f"{weights}: not a dictionary_learning crosscoder (missing {missing})")
    hub, trainer = _dl_configs(weights)
    W_enc = state["encoder.weight"].float()
    if W_enc.dim() != 3:
        raise _shape_error(weights, "encoder.weight", W_enc, (-1, -1, -1))
    L, D, F = W_enc.shape
    for name, want in (("encoder.bias", (F,)), ("decoder.weight", (L, F, D)), ("decoder.bias", (L, D))):
        if tuple(state[name].shape) != want:
            raise _shape_error(weights, name, state[name], want)
    layers = hub.get("encoder_layers")
    if layers is not None and list(layers) != list(range(L)):
        raise ForeignFormatError(f"{weights}: encoder_layers={layers} (a subset) is not supported")
    if "code_normalization_id" in state:
        code_norm = CODE_NORMALIZATION.get(int(state["code_normalization_id"]), "?")
    else:  # DL's from_pretrained assumes CROSSCODER for files of older versions
        code_norm = str(hub.get("code_normalization") or trainer.get("code_normalization") or "CROSSCODER").upper()
    topk = "k" in state and "threshold" in state
    dict_class = trainer.get("dict_class")
    if dict_class in ("CrossCoder", "BatchTopKCrossCoder") and (dict_class == "BatchTopKCrossCoder") != topk:
        has = "has" if topk else "lacks"
        raise ForeignFormatError(f"{weights}: config says {dict_class} but the state dict {has} k and threshold")
    if topk and code_norm != "CROSSCODER":
        raise ForeignFormatError(
            f"{weights}: BatchTopK with code_normalization {code_norm} is not supported (latentdiff's threshold "
            "scores f * sum_m ||d^m||, i.e. CROSSCODER)"
        )
    k = int(state["k"]) if topk else 32
    names = trainer.get("latentdiff_model_names") or []  # written by export_crosscoder
    spec = CrossCoderSpec(arch="batchtopk" if topk else "l1", n_models=L, d_model=D, dict_size=F, k=max(k, 1),
                          model_names=list(names) if len(names) == L else [])
    cc = CrossCoder(spec, directions=W_enc[0])  # skips the seeded random init (large dictionaries)
    with torch.no_grad():
        cc.W_enc.copy_(W_enc)  # [L, D, F]
        cc.b_enc.copy_(state["encoder.bias"].float())
        cc.W_dec.copy_(state["decoder.weight"].float().permute(1, 0, 2))  # [L, F, D] -> [F, L, D]
        cc.b_dec.copy_(state["decoder.bias"].float())
        if topk:
            cc.threshold.copy_(state["threshold"].float().reshape(()))
        mean, std = state.get("activation_mean"), state.get("activation_std")
        if mean is not None and std is not None and not (mean.isnan().any() or std.isnan().any()):
            if tuple(mean.shape) != (L, D):
                raise _shape_error(weights, "activation_mean", mean, (L, D))
            scale = state.get("activation_global_scale")
            if scale is None:  # NormalizableMixin: target_rms / sqrt(sum_d std^2 + 1e-8)
                scale = state.get("target_rms", torch.tensor(1.0)) / (std.double().pow(2).sum(-1) + 1e-8).sqrt()
            cc.act_mean.copy_(mean.float())
            cc.act_scale.copy_(scale.float().reshape(L))
    log.info("loaded dictionary_learning %s crosscoder %s: %d models, D=%d, F=%d, code_normalization %s",
             spec.arch, weights, L, D, F, code_norm)
    return cc


def estimate_scaling_factors(acts: Tensor) -> Tensor:
    """ckkissane / SAELens factors [M] = sqrt(D) / mean_n ||x_n^m|| from raw activations [N, M, D].

    Source: ckkissane/crosscoder-model-diff-replication:buffer.py Buffer.estimate_norm_scaling_factor (which
    averages per-batch means over 100 batches and keeps BOS; pass BOS-free rows to match its training data).
    """
    if acts.dim() != 3 or acts.shape[0] == 0:
        raise ForeignFormatError(f"scaling-factor sample must be [N, M, D] with N > 0, got {list(acts.shape)}")
    return math.sqrt(acts.shape[-1]) / acts.float().norm(dim=-1).mean(0)  # [M]


def _ckkissane_cfg(weights: Path) -> dict:
    for cand in (weights.parent / "cfg.json", weights.parent / f"{weights.stem}_cfg.json"):
        if cand.is_file():
            return _read_json(cand)
    raise ForeignFormatError(f"{weights}: no cfg.json or {weights.stem}_cfg.json beside it")


def _load_ckkissane(weights: Path, scales: Sequence[float] | Tensor | None, sample: Tensor | None) -> CrossCoder:
    """ckkissane CrossCoder (L1, ReLU) -> CrossCoder with act_scale = its input scaling factors."""
    state = _read_state(weights)
    missing = [k for k in CK_KEYS if k not in state]
    if missing:
        raise ForeignFormatError(f"{weights}: not a ckkissane crosscoder (missing {missing})")
    cfg = _ckkissane_cfg(weights)
    W_enc = state["W_enc"].float()
    if W_enc.dim() != 3:
        raise _shape_error(weights, "W_enc", W_enc, (-1, -1, -1))
    M, D, F = W_enc.shape
    for name, want in (("W_dec", (F, M, D)), ("b_enc", (F,)), ("b_dec", (M, D))):
        if tuple(state[name].shape) != want:
            raise _shape_error(weights, name, state[name], want)
    if cfg.get("d_in", D) != D or cfg.get("dict_size", F) != F:
        raise ForeignFormatError(f"{weights}: cfg d_in/dict_size {cfg.get('d_in')}/{cfg.get('dict_size')} != "
                                 f"weights {D}/{F}")
    if scales is not None:
        factors = torch.as_tensor(scales, dtype=torch.float32).reshape(-1)
    elif "latentdiff_scaling_factors" in cfg:
        factors = torch.tensor(cfg["latentdiff_scaling_factors"], dtype=torch.float32)
    elif sample is not None:
        factors = estimate_scaling_factors(sample)
    else:
        raise ForeignFormatError(
            f"{weights}: ckkissane crosscoders do not store their input scaling factors; pass scales=[...] or a "
            "sample of activations to estimate them on"
        )
    if factors.shape != (M,):
        raise ForeignFormatError(f"{weights}: {M} models but {factors.numel()} scaling factors")
    names = cfg.get("latentdiff_model_names") or []
    spec = CrossCoderSpec(arch="l1", n_models=M, d_model=D, dict_size=F, model_names=list(names)[:M] if
                          len(names) == M else [])
    cc = CrossCoder(spec, directions=W_enc[0])
    with torch.no_grad():
        cc.W_enc.copy_(W_enc)
        cc.b_enc.copy_(state["b_enc"].float())
        cc.W_dec.copy_(state["W_dec"].float())
        cc.b_dec.copy_(state["b_dec"].float())
        cc.act_scale.copy_(factors)  # x' = x * factor (no mean), as in buffer.py Buffer.next
    log.info("loaded ckkissane crosscoder %s: %d models, D=%d, F=%d, scaling factors %s", weights, M, D, F,
             [round(float(s), 6) for s in factors])
    return cc


# --------------------------------------------------------------------------- export


def export_crosscoder(cc: CrossCoder, fmt: Format, out_dir: str | Path) -> Path:
    """Write `cc` in another codebase's layout into out_dir; returns the weights file.

    dictionary_learning: the hub layout (`model.safetensors`, `config.json` as PyTorchModelHubMixin writes it,
    `trainer_config.json` as push_dictionary_model uploads it); loads with
    `BatchTopKCrossCoder.from_pretrained(out_dir, from_hub=True)` (or `CrossCoder` for L1).
    ckkissane: `cfg.json` + `cc_weights.pt` (CrossCoder.load_from_hf's names); L1 only, the normalisation
    mean folded into the biases and the scaling factors kept in cfg.json.
    """
    out = Path(out_dir)
    if fmt == "latentdiff":
        cc.save(out)
        return out / "crosscoder.safetensors"
    if fmt == "dictionary_learning":
        return _export_dictionary_learning(cc, out)
    if fmt == "ckkissane":
        return _export_ckkissane(cc, out)
    raise ForeignFormatError(f"{out}: unknown export format {fmt!r} (one of {', '.join(FORMATS)})")


def _dl_state(cc: CrossCoder) -> dict[str, Tensor]:
    """dictionary_learning state dict of `cc` (names, shapes and dtypes as its modules register them)."""
    M, D = cc.spec.n_models, cc.spec.d_model
    with torch.no_grad():
        mean, scale = cc.act_mean.detach().float().cpu(), cc.act_scale.detach().float().cpu()
        normalised = bool(mean.abs().max() > 0 or (scale != 1).any())
        if normalised:  # any std with sum_d std^2 = 1 / scale^2 reproduces the scale at target_rms 1
            std = (1.0 / (scale * math.sqrt(D)))[:, None].expand(M, D).contiguous()
        else:  # NormalizableMixin without statistics: NaN buffers, global scale 1
            mean, std, scale = torch.full((M, D), math.nan), torch.full((M, D), math.nan), torch.ones(M)
        state = {
            "target_rms": torch.tensor(1.0),
            "activation_mean": mean.contiguous(),
            "activation_std": std,
            "activation_global_scale": scale.contiguous(),
            "encoder.weight": cc.W_enc.detach().float().cpu().contiguous(),  # [M, D, F]
            "encoder.bias": cc.b_enc.detach().float().cpu().contiguous(),
            "decoder.bias": cc.b_dec.detach().float().cpu().contiguous(),  # [M, D]
            "decoder.weight": cc.decoder().detach().float().cpu().permute(1, 0, 2).contiguous(),  # [M, F, D]
            "code_normalization_id": torch.tensor(1),  # CROSSCODER, int64 as th.tensor(enum.value)
        }
        if cc.spec.arch == "batchtopk":
            state["k"] = torch.tensor(cc.spec.k, dtype=torch.int)
            state["threshold"] = cc.threshold.detach().float().cpu().reshape(()).clone()
    return state


def _export_dictionary_learning(cc: CrossCoder, out: Path) -> Path:
    s = cc.spec
    state = _dl_state(cc)
    if s.arch == "batchtopk":  # BatchTopKCrossCoder.__init__ defaults + passed values, as the mixin records them
        hub = {"activation_dim": s.d_model, "dict_size": s.dict_size, "num_layers": s.n_models, "k": s.k,
               "norm_init_scale": 1.0, "activation_mean": None, "activation_std": None, "target_rms": 1.0,
               "code_normalization": "CROSSCODER"}
        dict_class = "BatchTopKCrossCoder"
    else:  # CrossCoder.__init__ defaults
        hub = {"activation_dim": s.d_model, "dict_size": s.dict_size, "num_layers": s.n_models,
               "same_init_for_all_layers": False, "norm_init_scale": None, "init_with_transpose": True,
               "encoder_layers": None, "latent_processor": None, "num_decoder_layers": None,
               "code_normalization": "CROSSCODER", "code_normalization_alpha_sae": 1.0,
               "code_normalization_alpha_cc": 0.1, "activation_mean": None, "activation_std": None,
               "target_rms": None}
        dict_class = "CrossCoder"
    trainer = {"dict_class": dict_class, "trainer_class": f"{dict_class}Trainer", "activation_dim": s.d_model,
               "dict_size": s.dict_size, "code_normalization": "CROSSCODER", "target_rms": 1.0,
               "lm_name": "-".join(reversed(s.model_names)) if s.model_names else None,
               "latentdiff_model_names": s.model_names}
    if s.arch == "batchtopk":
        trainer["k"] = s.k
    weights = out / "model.safetensors"
    atomic_write(weights, lambda p: save_file(state, str(p)))
    atomic_write(out / "config.json", lambda p: p.write_text(json.dumps(hub, sort_keys=True, indent=2)))
    atomic_write_json(out / "trainer_config.json", {"trainer": trainer})
    return weights


def _export_ckkissane(cc: CrossCoder, out: Path) -> Path:
    s = cc.spec
    if s.arch != "l1" or s.n_models != 2:
        raise ForeignFormatError(f"{out}: ckkissane's crosscoder is an L1 crosscoder of 2 models; this one is {s.arch} "
                                 f"over {s.n_models}: export it as dictionary_learning")
    with torch.no_grad():
        mean, scale = cc.act_mean.detach().float().cpu(), cc.act_scale.detach().float().cpu()  # [M, D], [M]
        W_enc = cc.W_enc.detach().float().cpu()  # [M, D, F]
        # x' = (x - mu) s = x s - mu s: fold -sum_m (mu^m s^m) W_enc^m into b_enc and +mu s into b_dec
        shift = mean * scale[:, None]  # [M, D]
        b_enc = cc.b_enc.detach().float().cpu() - torch.einsum("md,mdf->f", shift, W_enc)
        b_dec = cc.b_dec.detach().float().cpu() + shift
        state = {"W_enc": W_enc.contiguous(), "W_dec": cc.decoder().detach().float().cpu().contiguous(),
                 "b_enc": b_enc.contiguous(), "b_dec": b_dec.contiguous()}
    cfg = {"seed": 0, "d_in": s.d_model, "dict_size": s.dict_size, "enc_dtype": "fp32", "device": "cpu",
           "dec_init_norm": 0.08, "latentdiff_scaling_factors": scale.tolist(), "latentdiff_model_names": s.model_names}
    weights = out / "cc_weights.pt"
    atomic_write(weights, lambda p: torch.save(state, p))
    atomic_write(out / "cfg.json", lambda p: p.write_text(json.dumps(cfg)))
    return weights
