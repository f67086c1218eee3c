"""Load HF causal LMs for diffing, check they are comparable, and run a forward that stops at a layer."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from torch import Tensor, nn

from latentdiff.config import ModelSpec
from latentdiff.core.organisms import resolve_model_path
from latentdiff.errors import ConfigError, ModelLoadError

log = logging.getLogger(__name__)

_LAYER_PATHS = (
    "model.layers",
    "model.language_model.layers",
    "transformer.h",
    "gpt_neox.layers",
    "model.decoder.layers",
)


def resolve_device(device: str) -> torch.device:
    """'auto' -> cuda if available else cpu; a device this machine lacks is a one-line ConfigError."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise ConfigError(f"harvest.device: not a device: {device!r} (use auto, cpu, cuda, cuda:N or mps)") from None
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise ConfigError(f"harvest.device={device}: no CUDA device on this machine (use cpu or auto)")
        if dev.index is not None and dev.index >= n:
            raise ConfigError(f"harvest.device={device}: no such device, this machine has {n} (cuda:0..cuda:{n - 1})")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"harvest.device={device}: MPS is not available on this machine (use cpu or auto)")
    return dev


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """'auto' -> bfloat16 on CUDA, float32 elsewhere."""
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, dtype)


@dataclass
class LoadedModel:
    """A model ready for harvesting."""

    spec: ModelSpec
    path: str
    model: nn.Module
    tokenizer: Any
    layers: nn.ModuleList

    @property
    def n_layers(self) -> int:
        """Number of transformer blocks."""
        return len(self.layers)

    @property
    def d_model(self) -> int:
        """Residual stream width."""
        return int(self.model.config.hidden_size)


def find_layers(model: nn.Module) -> nn.ModuleList:
    """The list of transformer blocks of a HF decoder model."""
    for path in _LAYER_PATHS:
        obj: Any = model
        try:
            for part in path.split("."):
                obj = getattr(obj, part)
        except AttributeError:
            continue
        if isinstance(obj, nn.ModuleList):
            return obj
    raise ModelLoadError(f"cannot find transformer blocks in {type(model).__name__}")


def load_model(
    spec: ModelSpec,
    device: str = "auto",
    device_map: str | None = None,
    max_memory: dict[str, int | str] | None = None,
    offload_folder: str | None = None,
) -> LoadedModel:
    """Load tokenizer + causal LM (no network needed for local paths); one-line error on failure.

    device_map (with accelerate): HF places the blocks over the GPUs, the CPU and disk within
    max_memory ({'0': '70GiB', 'cpu': ...}); accelerate's hooks move activations between devices.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model_path(spec.path)
    dev = resolve_device(device)
    dtype = resolve_dtype(spec.dtype, dev)
    try:
        tok_path, tok_rev = _tokenizer_source(spec, path)
        tok = AutoTokenizer.from_pretrained(tok_path, revision=tok_rev)
        kwargs: dict[str, Any] = {"dtype": dtype, "revision": spec.revision}
        if device_map:
            kwargs["device_map"] = device_map
            if max_memory:
                kwargs["max_memory"] = {int(k) if k.isdigit() else k: v for k, v in max_memory.items()}
            if offload_folder:
                kwargs["offload_folder"] = offload_folder
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except (OSError, ValueError, ImportError, SafetensorError, RuntimeError) as err:
        # ImportError: device_map without accelerate; SafetensorError/RuntimeError: truncated or corrupt weights
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelLoadError(f"model {spec.name!r}: cannot load {path!r}: {first}") from None
    if spec.adapter is not None:
        model = apply_adapter(model, spec)
    if not device_map:
        model = model.to(dev)
    model.eval().requires_grad_(False)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return LoadedModel(spec=spec, path=path, model=model, tokenizer=tok, layers=find_layers(model))


def _tokenizer_source(spec: ModelSpec, path: str) -> tuple[str, str | None]:
    """(where, revision) of the tokenizer: a local adapter directory that holds one, else the base's."""
    if spec.adapter is not None and (Path(spec.adapter).expanduser() / "tokenizer_config.json").is_file():
        return str(Path(spec.adapter).expanduser()), None
    return path, spec.revision


def apply_adapter(model: nn.Module, spec: ModelSpec) -> nn.Module:
    """The base model with the PEFT adapter `spec.adapter` applied (merged into its weights when
    `spec.merge_adapter`); one-line ModelLoadError when peft is missing or the adapter does not fit.

    Unmerged, the LoRA layers sit inside the base model's own blocks (peft injects them in place), so the
    plain HF model is returned either way and `find_layers` and the capture hooks work unchanged.
    """
    where = f"models.{spec.name}.adapter"
    try:
        from peft import PeftModel
    except ImportError:
        raise ModelLoadError(f"{where} needs peft: pip install 'latentdiff[peft]'") from None
    try:
        peft_model = PeftModel.from_pretrained(model, spec.adapter, revision=spec.adapter_revision)
        model = peft_model.merge_and_unload() if spec.merge_adapter else peft_model.get_base_model()
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as err:
        # ValueError: no adapter_config.json, target modules not in the base; RuntimeError: shapes that
        # do not fit the base (one "size mismatch for ..." line per tensor: the first is kept)
        lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
        first = next((line for line in lines if line.startswith("size mismatch")), lines[0] if lines else "")
        raise ModelLoadError(f"{where}: cannot apply {spec.adapter!r}: {first or type(err).__name__}") from None
    log.info("model %s: adapter %s applied%s", spec.name, spec.adapter, " (merged)" if spec.merge_adapter else "")
    return model


def check_compatible(models: list[LoadedModel], layer: int | None) -> int:
    """Refuse models whose tokenizers or widths differ or whose layer is out of range; return layer."""
    ref = models[0]
    ref_vocab = ref.tokenizer.get_vocab()
    for m in models[1:]:
        if m.tokenizer.get_vocab() != ref_vocab:
            diff = len(set(m.tokenizer.get_vocab().items()) ^ set(ref_vocab.items()))
            raise ModelLoadError(
                f"tokenizers differ: {m.spec.name!r} vs {ref.spec.name!r} ({diff} vocab entries "
                "differ); crosscoders need the same tokens"
            )
        for attr in ("bos_token", "eos_token", "pad_token"):
            a, b = getattr(m.tokenizer, attr), getattr(ref.tokenizer, attr)
            if a != b:
                raise ModelLoadError(
                    f"tokenizers differ: {attr} is {a!r} in {m.spec.name!r} but {b!r} in {ref.spec.name!r}"
                )
        if m.d_model != ref.d_model:
            raise ModelLoadError(
                f"hidden sizes differ: {m.spec.name!r} has {m.d_model}, {ref.spec.name!r} {ref.d_model}"
            )
    n_layers = min(m.n_layers for m in models)
    chosen = (n_layers - 1) // 2 if layer is None else layer  # after half the blocks
    if not 0 <= chosen < n_layers:
        raise ModelLoadError(
            f"layer {chosen} is out of range: the models have {n_layers} blocks (0..{n_layers - 1})"
        )
    return chosen


class _Stop(Exception):
    """Raised by the capture hook to end the forward pass after the captured block."""


@contextmanager
def _capture(block: nn.Module) -> Iterator[dict[str, Tensor]]:
    store: dict[str, Tensor] = {}

    def hook(_mod: nn.Module, _inp: Any, out: Any) -> None:
        store["acts"] = out[0] if isinstance(out, tuple) else out
        raise _Stop

    handle = block.register_forward_hook(hook)
    try:
        yield store
    finally:
        handle.remove()


@torch.no_grad()
def forward_to_layer(m: LoadedModel, input_ids: Tensor, attention_mask: Tensor, layer: int) -> Tensor:
    """Residual stream after block `layer`  [batch, seq, d_model]; later blocks and the LM head never run."""
    # under a device_map the weights may sit on several devices or on "meta" (offloaded): the ids go
    # to the CPU and accelerate's hooks move them to each block's execution device
    device = torch.device("cpu") if getattr(m.model, "hf_device_map", None) else next(m.model.parameters()).device
    with _capture(m.layers[layer]) as store:
        try:
            m.model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device), use_cache=False)
        except _Stop:
            pass
    if "acts" not in store:
        raise RuntimeError(f"block {layer} of {m.spec.name} did not run")
    return store["acts"]
