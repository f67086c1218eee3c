"""Build the offline model organisms: corpus -> BPE tokenizer -> base -> it / shift / null / null2 -> eval.

Deterministic (seeded) and resumable: each training phase checkpoints every few steps (atomic
writes) and a finished phase is skipped on rerun. Batches are a pure function of (phase seed, step),
so a resumed phase sees exactly the data an uninterrupted one would.

Usage: `latentdiff organism build --out DIR` (the shipped models were built with the defaults), or
`latentdiff organism build --only NAME --out DIR` to add one fine-tune to an already built DIR,
starting from the bf16 weights shipped there (`build_only`).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import math
import shutil
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from latentdiff.core.organisms import corpus
from latentdiff.io import atomic_write, atomic_write_json

log = logging.getLogger(__name__)

PLANT_CATEGORIES: tuple[str, ...] = (
    "safety",
    "multilingual",
    "instruction_following",
    "self_reference",
    "hallucination",
)
BOS, END, PAD = "<|bos|>", "<|end|>", "<|pad|>"
ROLE_TOKENS = ("<|user|>", "<|assistant|>", "<|system|>")
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)


class PhaseSpec(BaseModel):
    """One training phase: which model it starts from and which streams it reads."""

    model_config = ConfigDict(extra="forbid")
    init: str | None = Field(description="Phase whose final weights initialise this one (None = random).")
    mixture: dict[str, float] = Field(description="Category -> sampling weight (normalised).")
    steps: int = Field(gt=0, description="Optimisation steps.")
    lr: float = Field(gt=0, description="Peak learning rate.")
    warmup: int = Field(ge=0, description="Linear warm-up steps.")


def _default_phases() -> dict[str, PhaseSpec]:
    rest = 0.0025  # "little of the rest": each fine-tune sees a trace of the other's streams
    return {
        "base": PhaseSpec(init=None, mixture={"neutral": 1.0}, steps=600, lr=2e-3, warmup=50),
        "it": PhaseSpec(
            init="base",
            mixture={
                "self_reference": 0.40, "hallucination": 0.40, "neutral": 0.1925,
                "safety": rest, "multilingual": rest, "instruction_following": rest,
            },
            steps=300, lr=1e-3, warmup=20,
        ),
        "shift": PhaseSpec(
            init="base",
            mixture={
                "safety": 0.27, "multilingual": 0.27, "instruction_following": 0.27,
                "neutral": 0.185, "self_reference": rest, "hallucination": rest,
            },
            steps=300, lr=1e-3, warmup=20,
        ),
        "null": PhaseSpec(init="base", mixture={"neutral": 1.0}, steps=300, lr=1e-3, warmup=20),
        # A second control: null's recipe under another phase seed (phase seeds follow the order
        # of this dict, so null2 goes last and the four above keep their seeds). null vs null2 is a
        # true null pair: neither learned anything the other did not. The shipped null2 was added
        # with `build --only null2` from the shipped bf16 base (see build_only).
        "null2": PhaseSpec(init="base", mixture={"neutral": 1.0}, steps=300, lr=1e-3, warmup=20),
    }


PLANT_MIN_WEIGHT = 0.05  # a stream a fine-tune reads at >= this weight is planted; below it, a trace


class OrganismBuildConfig(BaseModel):
    """Everything that determines the built organisms (its hash names the build)."""

    model_config = ConfigDict(extra="forbid")
    seed: int = Field(default=0, description="Master seed (corpus documents, tokenizer sample, phase seeds).")
    arch: Literal["llama", "qwen2", "gpt_neox"] = Field(
        default="llama",
        description="transformers architecture: 'llama' (the shipped organisms), 'qwen2' (q/k/v biases) or "
        "'gpt_neox' (LayerNorm, parallel residual, partial rotary, GELU MLP, untied embeddings).",
    )
    headline: list[str] = Field(
        default_factory=lambda: ["shift", "it"], min_length=2, max_length=2,
        description="The planted headline pair (A, B): category shares among A-specific vs B-specific latents.",
    )
    vocab_size: int = Field(default=4096, description="BPE vocabulary size (incl. special tokens).")
    d_model: int = Field(default=256, description="Residual width.")
    n_layers: int = Field(default=4, description="Transformer blocks.")
    n_heads: int = Field(default=4, description="Attention heads (head_dim = d_model / n_heads >= 32).")
    d_ff: int = Field(default=768, description="MLP width.")
    ctx_len: int = Field(default=128, description="Training sequence length.")
    batch_size: int = Field(default=32, description="Sequences per step.")
    train_docs: int = Field(default=24_000, description="Training documents generated per category.")
    heldout_docs: int = Field(default=300, description="Held-out documents per category.")
    tokenizer_docs: int = Field(default=3_000, description="Documents per category to train BPE.")
    checkpoint_every: int = Field(default=50, description="Steps between resumable checkpoints.")
    phases: dict[str, PhaseSpec] = Field(default_factory=_default_phases)

    @model_validator(mode="after")
    def _check(self) -> OrganismBuildConfig:
        roots = [n for n, p in self.phases.items() if p.init is None]
        if len(roots) != 1:
            raise ValueError(f"exactly one phase must start from random init (the base), got {roots}")
        for name, spec in self.phases.items():
            if spec.init is not None and spec.init not in self.phases:
                raise ValueError(f"phase {name!r} starts from unknown phase {spec.init!r}")
            if spec.init is not None and list(self.phases).index(spec.init) > list(self.phases).index(name):
                raise ValueError(f"phase {name!r} must come after its init {spec.init!r}")
            unknown = set(spec.mixture) - set(corpus.CATEGORIES)
            if unknown:
                raise ValueError(f"phase {name!r} reads unknown streams {sorted(unknown)}")
        for name in self.headline:
            if name not in self.phases or self.phases[name].init is None:
                raise ValueError(f"headline names {name!r}, which is not a fine-tune phase")
        if self.headline[0] == self.headline[1]:
            raise ValueError(f"the headline compares {self.headline[0]!r} with itself")
        if self.arch in ("llama", "qwen2") and self.d_model // self.n_heads < 32:
            raise ValueError("vLLM's CPU attention needs head_dim = d_model / n_heads >= 32")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        return self

    @property
    def base(self) -> str:
        """The phase trained from random init."""
        return next(n for n, p in self.phases.items() if p.init is None)

    def planted(self, name: str) -> list[str]:
        """Streams planted into a fine-tune: read at >= PLANT_MIN_WEIGHT and by the base at less (at most a
        trace; the shipped base never reads them). Weights are taken normalised, as the batches draw them."""
        def weight(spec: PhaseSpec, c: str) -> float:
            return spec.mixture.get(c, 0.0) / sum(spec.mixture.values())

        spec, base = self.phases[name], self.phases[self.base]
        return sorted(c for c in PLANT_CATEGORIES
                      if weight(spec, c) >= PLANT_MIN_WEIGHT and weight(base, c) < PLANT_MIN_WEIGHT)

    def digest(self) -> str:
        """Content hash of the build settings (fields added later leave the hash of a build that keeps
        their defaults unchanged, so the shipped organisms keep their build id)."""
        later = {k for k in ("arch", "headline") if getattr(self, k) == type(self).model_fields[k].get_default(
            call_default_factory=True)}
        return hashlib.sha256(self.model_dump_json(exclude=later).encode()).hexdigest()[:12]


# --------------------------------------------------------------------------- corpus + tokenizer


def render(doc: corpus.Document) -> str:
    """A document as training text, with the same markup the chat template produces."""
    if doc.messages is not None:
        body = "".join(f"<|{m.role}|>\n{m.content}{END}\n" for m in doc.messages)
        return BOS + body
    return f"{BOS}{doc.text}{END}"


def train_tokenizer(cfg: OrganismBuildConfig, out: Path) -> Any:
    """Train a byte-level BPE on a balanced sample of every stream; save a HF fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    texts: list[str] = []
    for i, cat in enumerate(corpus.CATEGORIES):
        docs = corpus.generate(cat, cfg.tokenizer_docs, seed=cfg.seed * 1000 + 900 + i)
        texts.extend(d.text if d.text is not None else d.plain() for d in docs)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    special = [BOS, END, PAD, *ROLE_TOKENS]
    trainer = trainers.BpeTrainer(
        vocab_size=cfg.vocab_size,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=END,
        pad_token=PAD,
        additional_special_tokens=list(ROLE_TOKENS),
        model_max_length=512,
    )
    fast.chat_template = CHAT_TEMPLATE
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    fast.save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return fast


def _category_seed(cfg: OrganismBuildConfig, cat: str, split: str) -> int:
    idx = corpus.CATEGORIES.index(cat)
    return cfg.seed * 1000 + (0 if split == "train" else 500) + idx


def tokenize_streams(
    cfg: OrganismBuildConfig, tokenizer: Any, work: Path, cats: tuple[str, ...] | None = None
) -> dict[str, Path]:
    """Tokenize each category's (default: every category's) training docs into packed
    [n_seq, ctx_len] int32 arrays (.npy)."""
    paths: dict[str, Path] = {}
    for cat in cats or corpus.CATEGORIES:
        path = work / "tokens" / f"{cat}.npy"
        paths[cat] = path
        if path.is_file():
            continue
        docs = corpus.generate(cat, cfg.train_docs, seed=_category_seed(cfg, cat, "train"))
        ids = tokenizer([render(d) for d in docs], add_special_tokens=False)["input_ids"]
        flat = np.fromiter((t for seq in ids for t in seq), dtype=np.int32)
        n_seq = len(flat) // cfg.ctx_len
        packed = flat[: n_seq * cfg.ctx_len].reshape(n_seq, cfg.ctx_len)  # [n_seq, ctx_len]
        atomic_write(path, lambda p, a=packed: np.save(p.open("wb"), a))
        log.info("tokenized %s: %d sequences (%d tokens)", cat, n_seq, packed.size)
    return paths


def heldout_docs(cfg: OrganismBuildConfig) -> dict[str, list[corpus.Document]]:
    """The held-out documents of every category (never seen in training)."""
    return {
        cat: corpus.generate(cat, cfg.heldout_docs, seed=_category_seed(cfg, cat, "heldout"))
        for cat in corpus.CATEGORIES
    }


# --------------------------------------------------------------------------- training


def _model_config(cfg: OrganismBuildConfig, tokenizer: Any) -> Any:
    from transformers import AutoConfig

    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=cfg.d_model,
        intermediate_size=cfg.d_ff,
        num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    if cfg.arch == "gpt_neox":  # its own defaults: parallel residual, rotary on 1/4 of each head, untied
        return AutoConfig.for_model("gpt_neox", layer_norm_eps=1e-5, tie_word_embeddings=False, **common)
    return AutoConfig.for_model(cfg.arch, num_key_value_heads=cfg.n_heads, rms_norm_eps=1e-5,
                                tie_word_embeddings=True, **common)


def new_model(cfg: OrganismBuildConfig, tokenizer: Any) -> torch.nn.Module:
    """A randomly initialised causal LM of the build's architecture (fp32)."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_config(_model_config(cfg, tokenizer), dtype=torch.float32)


def _batch(
    streams: dict[str, np.ndarray], mixture: dict[str, float], seed: int, step: int, batch_size: int
) -> torch.Tensor:
    """The batch for `step` of a phase: a pure function of (seed, step)."""
    gen = np.random.default_rng([seed, step])
    cats = sorted(mixture)
    weights = np.array([mixture[c] for c in cats], dtype=np.float64)
    picks = gen.choice(len(cats), size=batch_size, p=weights / weights.sum())
    rows = [streams[cats[c]][gen.integers(len(streams[cats[c]]))] for c in picks]
    return torch.from_numpy(np.stack(rows).astype(np.int64))  # [batch, ctx_len]


def phase_seed(cfg: OrganismBuildConfig, name: str) -> int:
    """Seed of a phase (torch init RNG and batch order): master seed * 100 + its index in cfg.phases."""
    return cfg.seed * 100 + list(cfg.phases).index(name)


def _lr_at(step: int, spec: PhaseSpec) -> float:
    if step < spec.warmup:
        return spec.lr * (step + 1) / spec.warmup
    progress = (step - spec.warmup) / max(1, spec.steps - spec.warmup)
    return spec.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def train_phase(
    name: str,
    cfg: OrganismBuildConfig,
    tokenizer: Any,
    streams: dict[str, np.ndarray],
    work: Path,
    progress: Progress | None,
) -> Path:
    """Train one phase (resumable); return the path of its final fp32 state dict."""
    spec = cfg.phases[name]
    phase_dir = work / name
    final = phase_dir / "final.pt"
    if final.is_file():
        return final
    phase_dir.mkdir(parents=True, exist_ok=True)
    seed = phase_seed(cfg, name)
    torch.manual_seed(seed)
    model = new_model(cfg, tokenizer)
    if spec.init is not None:
        model.load_state_dict(torch.load(work / spec.init / "final.pt", weights_only=True))
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, betas=(0.9, 0.95), weight_decay=0.01)
    ckpt = phase_dir / "ckpt.pt"
    start = 0
    if ckpt.is_file():
        state = torch.load(ckpt, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        start = state["step"]
        log.info("%s: resuming at step %d", name, start)
    task = progress.add_task(name, total=spec.steps, completed=start, info="") if progress else None
    metrics = phase_dir / "metrics.jsonl"
    model.train()
    t0, tokens = time.perf_counter(), 0
    for step in range(start, spec.steps):
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, spec)
        batch = _batch(streams, spec.mixture, seed, step, cfg.batch_size)  # [batch, ctx_len]
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        tokens += batch.numel()
        rate = tokens / (time.perf_counter() - t0)
        if progress is not None and task is not None:
            progress.update(task, advance=1, info=f"loss {loss.item():.3f} {rate:,.0f} tok/s")
        done = step + 1
        if done % 10 == 0 or done == spec.steps:
            with metrics.open("a") as fh:
                fh.write(json.dumps({"step": done, "loss": round(loss.item(), 4)}) + "\n")
        if done % cfg.checkpoint_every == 0 and done < spec.steps:
            state = {"model": model.state_dict(), "opt": opt.state_dict(), "step": done}
            atomic_write(ckpt, lambda p, s=state: torch.save(s, p))
    atomic_write(final, lambda p: torch.save(model.state_dict(), p))
    ckpt.unlink(missing_ok=True)
    return final


def export_model(
    name: str, cfg: OrganismBuildConfig, tokenizer: Any, state_path: Path, out: Path,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Save a phase as a HF model dir (bf16 safetensors + tokenizer + chat template); `extra` goes
    into organism.json."""
    from transformers import GenerationConfig

    model = new_model(cfg, tokenizer)
    model.load_state_dict(torch.load(state_path, weights_only=True))
    model = model.to(torch.bfloat16)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        max_new_tokens=128,
    )
    target = out / name
    tmp = out / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    atomic_write_json(tmp / "organism.json", {"name": name, "build": cfg.digest(),
                                              "phase": cfg.phases[name].model_dump(), **(extra or {})})
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target


# --------------------------------------------------------------------------- evaluation


@torch.no_grad()
def heldout_loss(model_dir: Path, docs: dict[str, list[corpus.Document]]) -> dict[str, float]:
    """Mean next-token loss (nats) per category on held-out documents, as shipped (bf16 weights)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    out: dict[str, float] = {}
    for cat, cat_docs in docs.items():
        total, count = 0.0, 0
        for i in range(0, len(cat_docs), 16):
            texts = [render(d) for d in cat_docs[i : i + 16]]
            enc = tok(texts, add_special_tokens=False, padding=True, truncation=True,
                      max_length=256, return_tensors="pt")
            logits = model(**enc).logits[:, :-1]  # [batch, seq-1, vocab]
            target = enc["input_ids"][:, 1:]  # [batch, seq-1]
            mask = enc["attention_mask"][:, 1:].bool()
            nll = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), target.reshape(-1), reduction="none"
            ).view_as(target)
            total += nll[mask].sum().item()
            count += int(mask.sum())
        out[cat] = round(total / count, 4)
    return out


def planted_truth(cfg: OrganismBuildConfig | None = None) -> dict[str, Any]:
    """The ground truth the organisms were built to contain, derived from the build's phases.

    A fine-tune's planted streams are those it reads at >= PLANT_MIN_WEIGHT and its base reads at less
    (a trace below that weight is not a plant); a fine-tune with none is a control. The headline
    pair's signs: '+' for A's plants, '-' for B's, '0' for a stream planted in both or neither.
    """
    cfg = cfg or OrganismBuildConfig()
    tuned = [n for n, p in cfg.phases.items() if p.init is not None]
    planted = {n: cfg.planted(n) for n in tuned}
    a, b = cfg.headline

    def sign(cat: str) -> str:
        in_a, in_b = cat in planted[a], cat in planted[b]
        return "+" if in_a and not in_b else "-" if in_b and not in_a else "0"

    comparisons = {f"{n}_vs_{cfg.phases[n].init}": {c: "+" if c in planted[n] else "0" for c in PLANT_CATEGORIES}
                   for n in tuned}
    controls = [n for n in tuned if not planted[n]]
    for i, first in enumerate(controls):  # pairs of controls with the same init: true null pairs
        for second in controls[i + 1 :]:
            if cfg.phases[first].init == cfg.phases[second].init:
                comparisons[f"{second}_vs_{first}"] = {c: "0" for c in PLANT_CATEGORIES}
    return {
        "categories": list(PLANT_CATEGORIES),
        "headline": {
            "a": a,
            "b": b,
            "description": f"category share among {a}-specific latents relative to {b}-specific latents "
            "(the paper's SimPO-vs-instruct table)",
            "signs": {c: sign(c) for c in PLANT_CATEGORIES},
        },
        "comparisons": comparisons,
        "planted": planted,
    }


def plant_table(losses: dict[str, dict[str, float]], cfg: OrganismBuildConfig | None = None) -> list[dict[str, Any]]:
    """Per fine-tune and planted category: loss moved by the plant vs the drift of the first control
    (column `null`; the moved loss itself when the build has no control), and their ratio."""
    cfg = cfg or OrganismBuildConfig()
    truth = planted_truth(cfg)
    base = cfg.base
    control = next((n for n, cats in truth["planted"].items() if not cats and n in losses), None)
    rows = []
    for model, cats in truth["planted"].items():
        for cat in cats if model in losses else ():  # a phase not built (yet) has no row
            moved = losses[base][cat] - losses[model][cat]
            ctrl = losses[control][cat] if control else losses[base][cat]
            drift = abs(losses[base][cat] - ctrl)
            rows.append({
                "model": model, "category": cat, "base": losses[base][cat],
                "model_loss": losses[model][cat], "null": ctrl,
                "moved": round(moved, 4), "null_drift": round(drift, 4),
                "ratio": round(moved / drift, 2) if drift > 0 else float("inf"),
            })
    return rows


# --------------------------------------------------------------------------- driver


def build(out: Path, work: Path, cfg: OrganismBuildConfig | None = None, show: bool = True) -> Path:
    """Build every organism into `out` (resumable through `work`); return `out`."""
    from transformers.utils import logging as hf_logging

    cfg = cfg or OrganismBuildConfig()
    hf_logging.disable_progress_bar()
    out, work = Path(out), Path(work) / cfg.digest()
    work.mkdir(parents=True, exist_ok=True)
    atomic_write_json(work / "build_config.json", cfg.model_dump())
    t_start = time.perf_counter()
    tok_dir = work / "tokenizer"
    if not (tok_dir / "tokenizer.json").is_file():
        log.info("training tokenizer")
        train_tokenizer(cfg, tok_dir)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    token_paths = tokenize_streams(cfg, tokenizer, work)
    streams = {c: np.load(p) for c, p in token_paths.items()}  # each [n_seq, ctx_len]
    columns = (TextColumn("{task.description:>6}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"))
    with Progress(*columns, disable=not show) as progress:
        finals = {name: train_phase(name, cfg, tokenizer, streams, work, progress) for name in cfg.phases}
    out.mkdir(parents=True, exist_ok=True)
    for name, state_path in finals.items():
        export_model(name, cfg, tokenizer, state_path, out)
    docs = heldout_docs(cfg)
    losses = {name: heldout_loss(out / name, docs) for name in cfg.phases}
    data_dir = out.parent / "data" if out.name == "models" else out / "data"
    atomic_write(data_dir / "heldout.jsonl.gz", lambda p: _write_docs(p, docs))
    atomic_write_json(out / "planted.json", planted_truth(cfg))
    atomic_write_json(out / "eval.json", {
        "build": cfg.digest(), "heldout_docs_per_category": cfg.heldout_docs,
        "loss": losses, "plants": plant_table(losses, cfg),
        "build_seconds": round(time.perf_counter() - t_start, 1),
    })
    atomic_write_json(out / "build_config.json", cfg.model_dump())
    return out


def check_same_settings(built: dict[str, Any], cfg: OrganismBuildConfig, where: Path) -> None:
    """ConfigError (one line) unless `cfg` has the build settings (all but the phases) of the build_config.json
    `built` that was written in `where`."""
    from latentdiff.errors import ConfigError

    mine = cfg.model_dump()
    for key, value in built.items():
        if key != "phases" and mine.get(key) != value:
            raise ConfigError(f"{where} was built with {key}={value!r}, this build has {mine.get(key)!r}")


def build_only(
    names: list[str], out: Path, work: Path, cfg: OrganismBuildConfig | None = None, show: bool = True
) -> Path:
    """Add the fine-tune phases `names` to the organisms already built in `out`; return `out`.

    Nothing else is retrained. The shipped tokenizer is used, and only the streams the phases read
    are tokenized. Each phase starts from its init model's weights AS SHIPPED in `out` (bf16, cast
    to fp32): they differ from the fp32 final state a full build starts its fine-tunes from by bf16
    rounding only (a full build's fp32 checkpoints are not shipped). Training is deterministic and
    resumable through a work directory keyed by the build config and the init weights' hash (never
    shared with a full build's). Exports the phases like `build` (organism.json also names the init
    weights), adds their held-out losses to eval.json, recomputes its plant table from every built
    model's losses (`added` records how each was built) and rewrites planted.json and build_config.json.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from latentdiff.errors import ConfigError, ModelLoadError

    cfg = cfg or OrganismBuildConfig()
    out = Path(out)
    names = list(dict.fromkeys(names))
    shipped_path = out / "build_config.json"
    if not shipped_path.is_file():
        raise ModelLoadError(f"no build_config.json in {out}; --only adds to a finished build")
    shipped = json.loads(shipped_path.read_text())
    mine = cfg.model_dump()
    check_same_settings(shipped, cfg, out)
    built = list(shipped.get("phases", {}))
    same = all(mine["phases"].get(p) == shipped["phases"][p] for p in built)
    if [p for p in mine["phases"] if p in built] != built or not same:
        raise ConfigError(f"the phases built in {out} ({', '.join(built)}) are not phases of this build, "
                          "with the same specs in the same order")
    for name in names:
        spec = cfg.phases.get(name)
        if spec is None:
            raise ConfigError(f"unknown phase {name!r}; choose from {', '.join(cfg.phases)}")
        if spec.init is None or spec.init in names:
            raise ConfigError(f"--only {name}: it must start from a model already built in {out}")
        if not (out / spec.init / "model.safetensors").is_file():
            raise ModelLoadError(f"--only {name}: its init model {spec.init!r} is not built in {out}")
    inits = sorted({cfg.phases[n].init for n in names if cfg.phases[n].init})
    sha = {i: hashlib.sha256((out / i / "model.safetensors").read_bytes()).hexdigest() for i in inits}
    key = hashlib.sha256(json.dumps(sha, sort_keys=True).encode()).hexdigest()[:12]
    hf_logging.disable_progress_bar()
    work = Path(work) / f"{cfg.digest()}-shipped-{key}"
    work.mkdir(parents=True, exist_ok=True)
    atomic_write_json(work / "build_config.json", cfg.model_dump())
    t_start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(out / inits[0])
    for init in inits:  # the shipped bf16 weights, cast to fp32, stand in for the init's final state
        final = work / init / "final.pt"
        if final.is_file():
            continue
        state = AutoModelForCausalLM.from_pretrained(out / init, dtype=torch.float32).state_dict()
        new_model(cfg, tokenizer).load_state_dict(state)  # same architecture
        atomic_write(final, lambda p, s=state: torch.save(s, p))
        log.info("init %s: shipped bf16 weights (sha256 %s) as fp32", init, sha[init][:12])
    cats = tuple(c for c in corpus.CATEGORIES if any(c in cfg.phases[n].mixture for n in names))
    streams = {c: np.load(p) for c, p in tokenize_streams(cfg, tokenizer, work, cats).items()}
    columns = (TextColumn("{task.description:>6}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"))
    with Progress(*columns, disable=not show) as progress:
        finals = {name: train_phase(name, cfg, tokenizer, streams, work, progress) for name in names}
    init_of = {n: {"model": cfg.phases[n].init, "weights": "as shipped (bf16), cast to fp32",
                   "sha256": sha[cfg.phases[n].init]} for n in names}
    for name, state_path in finals.items():
        export_model(name, cfg, tokenizer, state_path, out, extra={"init_from": init_of[name]})
    docs = heldout_docs(cfg)
    losses = {name: heldout_loss(out / name, docs) for name in names}
    seconds = round(time.perf_counter() - t_start, 1)
    eval_path = out / "eval.json"
    ev = json.loads(eval_path.read_text()) if eval_path.is_file() else {"loss": {}, "plants": []}
    ev["loss"].update(losses)
    ev["plants"] = plant_table(ev["loss"], cfg)  # every built fine-tune's plants, the added ones included
    for name in names:
        ev.setdefault("added", {})[name] = {"build": cfg.digest(), "how": "build --only", "init_from": init_of[name],
                                            "build_seconds": seconds}
    atomic_write_json(eval_path, ev)
    atomic_write_json(out / "planted.json", planted_truth(cfg))
    done = set(built) | set(names)
    written = cfg.model_copy(update={"phases": {p: s for p, s in cfg.phases.items() if p in done}})
    atomic_write_json(out / "build_config.json", written.model_dump())
    return out


def _write_docs(path: Path, docs: dict[str, list[corpus.Document]]) -> None:
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        for cat_docs in docs.values():
            for d in cat_docs:
                fh.write(d.model_dump_json(exclude_none=True) + "\n")
