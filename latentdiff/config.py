"""The run configuration tree (`RunConfig`), its YAML loading and `key.sub=value` overrides.

One pydantic model per concern, every field documented with `Field(description=...)`, cross-field
checks in validators. A config is dumped as `config.yaml` next to every artifact it produced.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from latentdiff.errors import ConfigError

CATEGORY_NAMES: tuple[str, ...] = (
    "safety",
    "multilingual",
    "instruction_following",
    "self_reference",
    "hallucination",
    "other",
)


_DEVICE_RE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
HUB_ID_RE = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")  # OWNER/NAME: a hub model, adapter or dataset id


RESULT_NEUTRAL = {"result_neutral": True}  # json_schema_extra of a field that changes how, not what: not hashed
# json_schema_extra of a field added later whose None means "as before": left out of the hash while None,
# so runs made before the field existed keep their stage hashes (and are not recomputed)
HASH_OMIT_NONE = {"hash_omit_none": True}


def _neutral_fields(model: BaseModel) -> dict[str, Any]:
    """Pydantic `exclude` spec of the result-neutral fields in a config tree (nested sections included)."""
    out: dict[str, Any] = {}
    for name, info in type(model).model_fields.items():
        value = getattr(model, name)
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        if extra.get("result_neutral") or (extra.get("hash_omit_none") and value is None):
            out[name] = True
        elif isinstance(value, BaseModel) and (sub := _neutral_fields(value)):
            out[name] = sub
    return out


class _Section(BaseModel):
    """Base for every config section: unknown keys are errors, assignments are validated."""

    # allow_inf_nan=False: `lr: .inf` or `timeout_s: .nan` is an error naming the key, never a silent inf
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class ModelSpec(_Section):
    """One model to diff: a HF id or local path, and its role in the design."""

    name: str = Field(description="Short name used in reports and file names (e.g. 'base', 'it').")
    path: str = Field(
        description="HF model id or local directory; 'organism:NAME' selects a shipped organism."
    )
    role: Literal["base", "finetune", "control"] = Field(
        description="'base': the model fine-tunes start from; 'finetune': a model to explain; "
        "'control': the base trained further without the intervention (null arm)."
    )
    revision: str | None = Field(default=None, description="Git revision for a hub model.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="auto", description="Weights dtype; 'auto' = bfloat16 on CUDA, float32 on CPU."
    )
    adapter: str | None = Field(
        default=None,
        description="A PEFT (LoRA) adapter applied to the weights at `path`: a local directory written by "
        "peft's `save_pretrained` (adapter_config.json + adapter weights) or a hub id OWNER/NAME; needs "
        "`pip install 'latentdiff[peft]'`. The tokenizer comes from `path` unless the adapter directory holds "
        "one. None = the weights at `path` as they are.",
    )
    adapter_revision: str | None = Field(default=None, description="Git revision of a hub adapter.")
    merge_adapter: bool = Field(
        default=True,
        description="Fold the adapter into the base weights after loading (peft's merge_and_unload): the model "
        "is then a plain HF model, as fast as the base. False keeps peft's LoRA layers in the blocks (same "
        "activations up to rounding; the harvest hooks see the blocks either way).",
    )

    @field_validator("name")
    @classmethod
    def _name_is_simple(cls, v: str) -> str:
        if not v or not all(c.isalnum() or c in "-_." for c in v):
            raise ValueError(f"must be non-empty letters/digits/-_. only, got {v!r}")
        return v

    @field_validator("adapter")
    @classmethod
    def _adapter_exists(cls, v: str | None) -> str | None:
        if v is None or Path(v).expanduser().is_dir() or (HUB_ID_RE.fullmatch(v) and ".." not in v):
            return v
        what = "not a directory" if Path(v).expanduser().exists() else "no such directory"
        raise ValueError(f"{what}, and not a hub id OWNER/NAME (a peft adapter: adapter_config.json + weights)")

    @model_validator(mode="after")
    def _revision_needs_adapter(self) -> ModelSpec:
        if self.adapter_revision is not None and self.adapter is None:
            raise ValueError("adapter_revision is set but adapter is not")
        return self

    @model_serializer(mode="wrap")
    def _omit_unused_adapter(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # without an adapter its keys are left out of dumps (config.yaml, stage hashes), so the "models"
        # hash of runs made before adapters existed is unchanged (HASH_OMIT_NONE does not reach list items)
        data = handler(self)
        if self.adapter is None:
            for key in ("adapter", "adapter_revision", "merge_adapter"):
                data.pop(key, None)
        return data


class DataConfig(_Section):
    """Which text the models read, and how it becomes token batches."""

    source: Literal["organism", "files", "hf"] = Field(
        default="organism",
        description="'organism': the bundled organism corpus; 'files': local text/jsonl/parquet files; 'hf': a "
        "dataset read through the `datasets` library (data.id).",
    )
    paths: list[str] = Field(
        default_factory=list, description="Local data files (source='files'); globs allowed."
    )
    # source='hf' (core/data.py `_hf_docs`); every field is None by default and then left out of the stage
    # hashes, so runs made before these fields existed keep their hashes
    id: str | None = Field(
        default=None,
        description="source='hf': a hub dataset id ('lmsys/lmsys-chat-1m'), a directory written by "
        "`Dataset.save_to_disk` / `DatasetDict.save_to_disk`, or a local dataset directory that "
        "`datasets.load_dataset` accepts (data files).",
        json_schema_extra=HASH_OMIT_NONE,
    )
    config: str | None = Field(
        default=None, description="source='hf': the dataset's config (subset) name.", json_schema_extra=HASH_OMIT_NONE
    )
    split: str | None = Field(
        default=None,
        description="source='hf': the dataset split read (None = 'train'). Held out: every 10th row of it "
        "(never a train document), unless data.heldout_split is set.",
        json_schema_extra=HASH_OMIT_NONE,
    )
    heldout_split: str | None = Field(
        default=None,
        description="source='hf': read held-out documents from this split instead (all its rows; the train "
        "split then keeps all of its rows); None = every 10th row of data.split.",
        json_schema_extra=HASH_OMIT_NONE,
    )
    revision: str | None = Field(
        default=None, description="source='hf': git revision of a hub dataset.", json_schema_extra=HASH_OMIT_NONE
    )
    streaming: bool | None = Field(
        default=None,
        description="source='hf': iterate the dataset without downloading it whole (datasets' streaming mode). "
        "None = True for a hub id or data-file directory, False for a save_to_disk directory (memory-mapped "
        "Arrow, read row by row either way).",
        json_schema_extra=RESULT_NEUTRAL,
    )
    chat_template: str | None = Field(
        default=None,
        description="Jinja chat template (a template string, or the path of a .jinja file) that formats chat "
        "documents instead of the tokenizer's own; needed when the data has chat messages and the first "
        "model's tokenizer has no chat template (e.g. a base model).",
        json_schema_extra=HASH_OMIT_NONE,
    )
    text_field: str = Field(default="text", description="Column holding plain text documents.")
    messages_field: str = Field(
        default="messages",
        description="Column holding chat documents (list of {role, content}); formatted with the "
        "model's chat template.",
    )
    ctx_len: int = Field(default=128, gt=8, le=8192, description="Tokens per context window.")
    n_tokens: int = Field(default=400_000, gt=0, description="Training tokens to harvest.")
    n_heldout_tokens: int = Field(
        default=100_000, ge=0, description="Held-out tokens for selection statistics and examples."
    )
    max_doc_chars: int | None = Field(
        default=None, gt=0,
        description="Characters of a document kept before tokenizing (a huge document is never tokenized "
        "whole); None = 16 x ctx_len, enough to fill a context with any real tokenizer.",
        json_schema_extra=HASH_OMIT_NONE,
    )
    exclude_bos: bool = Field(default=True, description="Drop BOS positions from training data.")
    exclude_special: bool = Field(
        default=False,
        description="Also drop every other special token (EOS, chat role markers). Padding is "
        "always dropped.",
    )
    max_docs: int | None = Field(
        default=None, gt=0, description="Stop after this many documents (None = until n_tokens)."
    )
    exclude_sink_norm: float | None = Field(
        default=None,
        gt=1.0,
        description="Drop positions whose activation norm exceeds this multiple of the median "
        "(high-norm attention sinks); None keeps them.",
    )
    seed: int = Field(default=0, description="Data shuffling / sampling seed.")

    @model_validator(mode="after")
    def _files_need_paths(self) -> DataConfig:
        if self.source == "files" and not self.paths:
            raise ValueError("source='files' needs at least one entry in data.paths")
        if self.source == "hf" and not self.id:
            raise ValueError("source='hf' needs data.id (a hub dataset id or a local dataset directory)")
        if self.heldout_split is not None and self.heldout_split == (self.split or "train"):
            raise ValueError(f"heldout_split {self.heldout_split!r} is data.split: held-out documents must differ")
        template = self.chat_template
        if template is not None and "{" not in template and not Path(template).expanduser().is_file():
            raise ValueError(f"chat_template: no such file {template!r} (a Jinja template string or a .jinja file)")
        return self

    def chat_template_text(self) -> str | None:
        """The Jinja chat template data.chat_template names (its text, read from the file if it is a path)."""
        template = self.chat_template
        if template is None or "{" in template:
            return template
        path = Path(template).expanduser()
        try:
            return path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError(f"data.chat_template: cannot read {path} ({err})") from None


class HarvestConfig(_Section):
    """Capturing paired activations."""

    layer: int | None = Field(
        default=None,
        description="Capture the residual stream at the output of block `layer` (0-based, = HF "
        "hidden_states[layer + 1]); None = the middle, (n_layers - 1) // 2.",
    )
    batch_size: int = Field(default=32, gt=0, description="Contexts per forward pass.")
    mode: Literal["cache", "stream"] = Field(
        default="cache",
        description="'cache': sharded on-disk activations; 'stream': in-memory shuffle buffer.",
    )
    shard_tokens: int = Field(default=65_536, gt=0, description="Tokens per on-disk shard.")
    cache_dtype: Literal["bfloat16", "float16", "float32"] = Field(
        default="bfloat16", description="Storage dtype of cached activations."
    )
    device: str = Field(
        default="auto",
        description="'auto', 'cpu', 'cuda', 'cuda:1', 'mps'; whether the device exists is checked when the "
        "harvest starts.",
    )
    device_map: str | None = Field(
        default=None,
        description="HF `device_map` for models larger than one GPU ('auto', 'balanced', ...; needs the "
        "`accelerate` package); None = the whole model on `device`. Weights dtype: models[i].dtype.",
    )
    max_memory: dict[str, int | str] | None = Field(
        default=None,
        description="With device_map: memory budget per device, e.g. {'0': '70GiB', '1': '70GiB', 'cpu': "
        "'200GiB'} (GPU index, 'cpu'; bytes or '70GiB'); what does not fit goes to the next device, then "
        "to the CPU, then to disk (offload_folder).",
        json_schema_extra=RESULT_NEUTRAL,
    )
    offload_folder: str | None = Field(
        default=None,
        description="With device_map: where weights offloaded to disk are kept.",
        json_schema_extra=RESULT_NEUTRAL,
    )

    @field_validator("device")
    @classmethod
    def _device_form(cls, v: str) -> str:
        if not _DEVICE_RE.fullmatch(v):
            raise ValueError("must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")
        return v

    @model_validator(mode="after")
    def _check(self) -> HarvestConfig:
        if (self.max_memory or self.offload_folder) and not self.device_map:
            raise ValueError("max_memory and offload_folder need device_map (e.g. 'auto')")
        return self
    shuffle_buffer_tokens: int = Field(
        default=262_144, gt=0, description="Shuffle buffer size in tokens (stream mode)."
    )


class CrosscoderConfig(_Section):
    """The crosscoder architecture and its training."""

    arch: Literal["batchtopk", "l1"] = Field(default="batchtopk", description="Sparsity mechanism.")
    dict_size: int = Field(default=2048, gt=0, description="Number of latents F.")
    k: int = Field(default=32, gt=0, description="BatchTopK: mean active latents per token.")
    k_start: int | None = Field(
        default=None, description="BatchTopK: anneal k linearly from this value (None = no annealing)."
    )
    k_anneal_steps: int = Field(default=0, ge=0, description="Steps over which k is annealed.")
    l1_coeff: float = Field(default=0.04, ge=0, description="L1: sparsity coefficient lambda.")
    l1_warmup_steps: int = Field(default=500, ge=0, description="L1: linear lambda warm-up steps.")
    aux_alpha: float = Field(default=1 / 32, ge=0, description="BatchTopK: AuxK loss weight.")
    dead_tokens: int = Field(
        default=1_000_000, gt=0, description="A latent unused for this many tokens counts as dead."
    )
    n_shared: int = Field(
        default=0, ge=0, description="Designated shared latents (decoders tied across models)."
    )
    shared_penalty_ratio: float = Field(
        default=0.15, ge=0, le=1, description="L1: sparsity penalty ratio for designated shared latents."
    )
    lr: float | None = Field(
        default=None, gt=0, description="Adam learning rate; None = 2e-4 / sqrt(F / 2^14)."
    )
    warmup_steps: int = Field(default=200, ge=0, description="Linear learning-rate warm-up.")
    decay_start: float = Field(
        default=0.8, gt=0, le=1, description="Fraction of training after which lr decays to 0."
    )
    batch_size: int = Field(default=1024, gt=0, description="Tokens per optimisation step.")
    steps: int = Field(default=2000, gt=0, description="Optimisation steps.")
    grad_clip: float = Field(default=1.0, gt=0, description="Gradient-norm clip.")
    normalize: bool = Field(default=True, description="Per-model activation normalisation.")
    target_rms: float = Field(default=1.0, gt=0, description="Activation RMS after normalisation.")
    checkpoint_every: int = Field(default=250, gt=0, description="Steps between checkpoints.")
    cpu_threads: int | None = Field(
        default=None, ge=1,
        description="CPU training: threads per step. None: start from torch's count and let the trainer choose "
        "between it and fewer by timing its own steps (core/threads.py: on a CPU shared with another busy "
        "process fewer threads are faster). Speed only: the weights are the same with any count.",
        json_schema_extra=RESULT_NEUTRAL,
    )
    autocast_bf16: bool = Field(default=True, description="bf16 autocast where the device supports it.")
    seed: int = Field(default=0, description="Initialisation and data-order seed.")
    seeds: list[int] | None = Field(
        default=None,
        description="Replicates: train one crosscoder per seed on the same cache (the first is the primary and "
        "keeps the plain name; others are named NAME-seed<s>); each is selected, sampled and labelled, and "
        "the report gives per category the sign agreement across seeds and the pooled effect. None = one "
        "crosscoder with `seed`.",
        json_schema_extra=HASH_OMIT_NONE,
    )
    shard_dict: bool = Field(
        default=False,
        description="Under torchrun: split the dictionary into one block of latents per rank (every rank sees "
        "the whole batch) instead of replicating it (data parallel); for dictionaries too large for one "
        "device. dict_size must divide by the number of ranks. Same results either way, so it is left "
        "out of the stage hash: a run may switch mode and resume.",
        json_schema_extra=RESULT_NEUTRAL,
    )
    init_from: str | None = Field(
        default=None,
        description="Load this crosscoder instead of training one: a directory or weights file saved by "
        "dictionary_learning, ckkissane's replication or latentdiff, or 'hub:OWNER/NAME[/FOLDER][@REV]' "
        "(core/formats.py, docs/interop.md). The architecture comes from the file; select, sample, label "
        "and report run as usual on the harvested activations.",
        json_schema_extra=HASH_OMIT_NONE,
    )
    init_format: Literal["dictionary_learning", "ckkissane", "latentdiff"] | None = Field(
        default=None, description="Layout of init_from (None = detected from its files).",
        json_schema_extra=HASH_OMIT_NONE,
    )
    init_scales: list[float] | None = Field(
        default=None, description="ckkissane layout only: the per-model input scaling factors it was trained "
        "with (None = stored by latentdiff's export, else estimated on the harvested activations).",
        json_schema_extra=HASH_OMIT_NONE,
    )

    @model_validator(mode="after")
    def _check(self) -> CrosscoderConfig:
        if self.init_from is not None and self.seeds is not None and len(self.seeds) > 1:
            raise ValueError("init_from loads one crosscoder: it cannot be combined with replicate seeds")
        if self.init_scales is not None and any(not x > 0 for x in self.init_scales):
            raise ValueError(f"init_scales must be positive, got {self.init_scales}")
        if self.arch == "batchtopk" and self.k >= self.dict_size:
            raise ValueError(f"k ({self.k}) must be smaller than dict_size ({self.dict_size})")
        if self.k_start is not None and self.k_start < self.k:
            raise ValueError(f"k_start ({self.k_start}) must be >= k ({self.k})")
        if self.n_shared >= self.dict_size:
            raise ValueError(f"n_shared ({self.n_shared}) must be < dict_size ({self.dict_size})")
        if self.seeds is not None and (not self.seeds or len(set(self.seeds)) != len(self.seeds)
                                       or any(s < 0 for s in self.seeds)):
            raise ValueError(f"seeds must be a non-empty list of distinct non-negative integers, got {self.seeds}")
        return self

    @property
    def replicate_seeds(self) -> list[int]:
        """The seeds of every crosscoder to train (the primary first)."""
        return list(self.seeds) if self.seeds else [self.seed]


class SelectionConfig(_Section):
    """Which latents count as model-specific."""

    method: Literal["latent_scaling", "delta_norm", "rank"] = Field(
        default="latent_scaling",
        description="'latent_scaling': nu thresholds (Minder et al. 2025); 'delta_norm': Delta-norm "
        "thresholds; 'rank': the top_n latents by Delta-norm per side.",
    )
    finetuned_delta: float = Field(
        default=0.9, ge=0.5, le=1, description="Delta-norm >= this: fine-tune-only."
    )
    base_delta: float = Field(default=0.1, ge=0, le=0.5, description="Delta-norm <= this: base-only.")
    shared_band: float = Field(default=0.1, gt=0, le=0.5, description="|Delta-norm - 0.5| < this: shared.")
    nu_eps_max: float = Field(default=0.2, gt=0, description="Latent Scaling: nu-epsilon below this.")
    nu_r_max: float = Field(default=0.5, gt=0, description="Latent Scaling: nu-r below this.")
    top_n: int = Field(default=200, gt=0, description="Candidates per side ('rank' and fallbacks).")
    min_count: int = Field(
        default=10, ge=0, description="Fall back to Latent Scaling / rank when fewer latents pass."
    )
    reference_n: int = Field(
        default=100, ge=0,
        description="Reference set: this many latents shared in every pair of a crosscoder, drawn at random "
        "(seeded), are sampled and labelled like the specific ones; each specific set is compared with it. "
        "100 estimates a share to about +-10 points (95%).",
    )

    @model_validator(mode="after")
    def _check(self) -> SelectionConfig:
        if self.base_delta >= self.finetuned_delta:
            raise ValueError(
                f"base_delta ({self.base_delta}) must be < finetuned_delta ({self.finetuned_delta})"
            )
        return self


class SamplingConfig(_Section):
    """delphi-style example sampling per latent."""

    window: int = Field(default=32, gt=1, description="Tokens per example window.")
    n_top: int = Field(default=20, ge=0, description="Top-activating examples per latent.")
    n_quantiles: int = Field(default=10, gt=0, description="Activation quantile buckets.")
    n_per_quantile: int = Field(default=2, ge=0, description="Examples drawn per quantile bucket.")
    n_negative: int = Field(default=20, ge=0, description="Random non-activating examples.")
    mark_threshold: float = Field(
        default=0.3, gt=0, le=1, description="Mark tokens above this fraction of the example's max."
    )
    scaffold_share: float = Field(
        default=0.5, gt=0, le=1,
        description="A latent is scaffolding when more than this share of its activation mass (over its top "
        "and quantile examples) falls on special tokens (BOS/EOS, chat role and turn markers).",
    )


class InspectConfig(_Section):
    """Latent pages: logit lens, ablation and activation histogram of each labelled latent (core/inspect.py)."""

    enabled: bool = Field(default=True, description="Run the inspect stage (off: latent pages without them).")
    lens_k: int = Field(default=10, ge=1, description="Tokens promoted and suppressed per model (logit lens).")
    ablation_contexts: int = Field(
        default=3, ge=0, description="Top-example contexts per latent on which the ablation runs (0 = no ablation)."
    )
    batch_size: int = Field(default=16, gt=0, description="Context rows per forward pass of the ablation.")
    bins: int = Field(default=20, ge=2, description="Bins of the activation histogram.")


class StoreConfig(_Section):
    """The Chroma store of examples and findings."""

    url: str | None = Field(
        default=None, description="Chroma server URL (http://host:port); None = embedded store."
    )
    path: str | None = Field(default=None, description="Embedded store dir; None = RUN_DIR/chroma.")
    embedding_model: str = Field(
        default="default",
        description="'default' = the bundled all-MiniLM-L6-v2 package, or a local "
        "sentence-transformers path.",
    )
    batch_size: int = Field(default=256, gt=0, description="Upsert batch (capped by the server).")


class JudgeConfig(_Section):
    """The model that names and categorises latents."""

    spec: str = Field(
        default="embedding",
        description="'embedding' (offline), 'vllm:URL@MODEL' (replicas: 'vllm:URL1,URL2@MODEL'), "
        "'openai:URL@MODEL', "
        "'transformers:PATH', or 'module:Class'.",
    )
    balance: Literal["least_loaded", "round_robin"] = Field(
        default="least_loaded", description="How requests spread over several endpoints (vllm:URL1,URL2@MODEL)."
    )
    max_concurrency: int = Field(default=32, gt=0, description="Concurrent judge requests.")
    timeout_s: float = Field(default=60.0, gt=0, description="Per-request timeout.")
    retries: int = Field(default=3, ge=0, description="Retries with exponential backoff.")
    temperature: float = Field(default=0.0, ge=0, le=2, description="Sampling temperature.")
    max_tokens: int = Field(default=512, gt=0, description="Max tokens per judge answer.")
    cache: bool = Field(default=True, description="Cache responses keyed by prompt hash.")
    taxonomy: str | None = Field(default=None, description="Path to a taxonomy YAML; None = the bundled one.")


class AgentConfig(_Section):
    """The labelling agent."""

    max_latents: int | None = Field(
        default=None, gt=0, description="Label at most this many latents (None = all)."
    )
    max_judge_calls: int | None = Field(
        default=None, gt=0, description="Budget of judge calls (None = unlimited)."
    )
    concurrency: int = Field(default=16, gt=0, description="Latents processed concurrently.")
    verify: bool = Field(default=True, description="Detection-score each label.")
    refine_below: float | None = Field(
        default=None, ge=0.0, le=1.0,
        description="Refine a label whose detection accuracy is below this, e.g. 0.7 (None = never refine; off "
        "by default: with the offline judge it raises verification but moved the demo's labels enough to lose "
        "a planted sign, docs/agent.md).",
    )
    refine_confidence: float = Field(
        default=0.0, ge=0.0, le=1.0,
        description="Also refine a label whose judge confidence is below this (0 = verification alone decides).",
    )
    refine_rounds: int = Field(
        default=1, ge=0, le=3,
        description="Refinement rounds at most per latent, each with evidence not shown before; the "
        "best-verified label is kept.",
    )
    adaptive: bool = Field(
        default=False,
        description="Label in waves, taking first from the (pair, side) sets with the widest shift CIs "
        "(order within them: adaptive_order); stop at the budget (max_latents / max_judge_calls) or when "
        "every CI is narrower than ci_width. False = label every candidate in effect-size order.",
    )
    adaptive_order: Literal["random", "effect"] = Field(
        default="random",
        description="Adaptive waves, within the sets that need labels most: 'random' draws latents in a "
        "seeded random order (each set's labelled latents are a random sample of it, so budget-limited "
        "shares are unbiased); 'effect' takes the largest effect sizes first (a reading list of the most "
        "model-specific latents, but biased shares).",
    )
    wave_size: int | None = Field(
        default=None, gt=0, description="Latents per adaptive wave (None = a fifth of the budget, at least 8)."
    )
    ci_width: float | None = Field(
        default=None, gt=0,
        description="Adaptive stop: every category's shift 95% CI narrower than this (percentage points).",
    )
    ci_min_per_set: int = Field(
        default=20, ge=1,
        description="Adaptive stop: the ci_width rule also needs this many labelled latents in every (pair, "
        "side) set, or all of a smaller set's candidates (a bootstrap over a few latents gives CIs that are "
        "too narrow, e.g. 0 wide for a category none of them has).",
    )


class ReportConfig(_Section):
    """The report."""

    @model_validator(mode="before")
    @classmethod
    def _legacy(cls, data: Any) -> Any:
        # `bootstrap` (resamples of the bootstrap CIs that the exact tests replaced) is accepted and
        # ignored, so the config.yaml of a run made before still opens
        if isinstance(data, dict) and "bootstrap" in data:
            data = {k: v for k, v in data.items() if k != "bootstrap"}
        return data

    formats: list[Literal["md", "html", "json"]] = Field(
        default_factory=lambda: ["md", "html", "json"], description="Report formats to write."
    )
    alpha: float = Field(default=0.05, gt=0, lt=1, description="Significance level after correction.")
    correction: Literal["holm", "bh"] = Field(
        default="holm", description="Across the categories of a comparison: 'holm' (family-wise error rate) or "
        "'bh' (Benjamini-Hochberg, false discovery rate).",
    )
    min_set_size: int = Field(
        default=10, ge=1, description="A comparison whose smaller set has fewer latents is not tested: 'too few "
        "latents to compare (n)'.",
    )
    exclude_scaffold: bool = Field(
        default=True, description="Leave scaffolding latents out of category shares (they are counted apart)."
    )
    low_confidence: float = Field(
        default=0.5, ge=0.0, le=1.0, description="A label whose calibrated confidence (agent/confidence.py) is "
        "below this is marked low-confidence; every comparison is also reported without those labels.",
    )
    exclude_low_confidence: bool = Field(
        default=False, description="Leave low-confidence labels out of the main comparisons (the other way "
        "round is then the alternative view).",
    )
    max_cards: int = Field(default=50, ge=0, description="Latent cards in the report.")
    seed: int = Field(default=0, description="Bootstrap seed.")
    summary_llm: str | None = Field(
        default=None,
        description="'vllm:URL@MODEL' / 'openai:URL@MODEL' that drafts the executive summary; None = the judge "
        "when it is such an HTTP judge, else the templated summary; 'template' = always the templated summary.",
    )
    summary_attempts: int = Field(
        default=3, ge=1, description="LLM drafts of the summary (the first plus repairs) before falling back."
    )
    summary_fallback: Literal["strip", "template"] = Field(
        default="strip", description="When every draft fails the checker: publish the best draft's passing "
        "sentences ('strip'; the template if none passes) or the templated summary ('template')."
    )
    summary_top_latents: int = Field(default=2, ge=1, le=5, description="Latents per category and side in the "
                                     "summary's fact sheet.")
    summary_max_tokens: int = Field(default=1024, gt=0, description="Max tokens of a summary draft.")


class LogConfig(_Section):
    """Experiment logging: training and labelling metrics to TensorBoard and W&B (latentdiff/tracking.py).

    How a run is watched, never what it computes: the whole section is left out of every stage hash.
    """

    tensorboard: bool = Field(
        default=False,
        description="Write TensorBoard event files: train/ scalars of every metrics.jsonl row (one TensorBoard "
        "run per crosscoder, train/NAME) and label/ scalars after each labelling wave (needs `pip install "
        "'latentdiff[tensorboard]'`).",
    )
    tensorboard_dir: str | None = Field(
        default=None, description="Where the event files go (None = RUN_DIR/tensorboard); `tensorboard --logdir` it."
    )
    wandb: bool = Field(
        default=False,
        description="Also log the same scalars to Weights & Biases, one W&B run per crosscoder and one for "
        "labelling, with the run config (needs `pip install 'latentdiff[wandb]'`); files under RUN_DIR/wandb.",
    )
    wandb_project: str = Field(default="latentdiff", description="W&B project name.")
    wandb_mode: Literal["offline", "online", "disabled"] = Field(
        default="offline",
        description="'offline': write locally only (upload later with `wandb sync RUN_DIR/wandb/offline-run-*`); "
        "'online': stream to the W&B server (needs `wandb login`); 'disabled': no W&B files at all.",
    )


class RunConfig(_Section):
    """A whole latentdiff run: models, data, and every stage's settings."""

    name: str = Field(
        default="run",
        description="Run name (the run directory's default name, runs/NAME): letters, digits, -_. only, so "
        "it can never point outside runs/ ('..', '/', '\\' are refused).",
    )
    run_dir: str | None = Field(default=None, description="Run directory; None = runs/NAME.")
    models: list[ModelSpec] = Field(
        default_factory=lambda: [
            ModelSpec(name="base", path="organism:base", role="base"),
            ModelSpec(name="it", path="organism:it", role="finetune"),
            ModelSpec(name="shift", path="organism:shift", role="finetune"),
        ],
        description="The models to diff: one 'base', one or more 'finetune', optional 'control'.",
    )
    design: Literal["pairwise", "joint"] = Field(
        default="pairwise",
        description="'pairwise': one base-vs-finetune crosscoder per fine-tune; 'joint': one "
        "N-model crosscoder over all models.",
    )
    headline: tuple[str, str] | None = Field(
        default=None,
        description="(A, B): report category shares of A-specific latents relative to B-specific "
        "ones (the paper's SimPO-vs-instruct table). None = each fine-tune vs base.",
    )
    headline_exclusive: bool = Field(
        default=True,
        description="Joint design: in the headline, count only latents specific to A and not to B (and "
        "vice versa), so concepts both fine-tunes gained do not blur their difference. False = the "
        "paper's two overlapping sets.",
    )
    seed: int = Field(default=0, description="Global seed.")
    data: DataConfig = Field(default_factory=DataConfig, description="Data.")
    harvest: HarvestConfig = Field(default_factory=HarvestConfig, description="Harvest.")
    crosscoder: CrosscoderConfig = Field(default_factory=CrosscoderConfig, description="Crosscoder.")
    selection: SelectionConfig = Field(default_factory=SelectionConfig, description="Selection.")
    sampling: SamplingConfig = Field(default_factory=SamplingConfig, description="Examples.")
    inspect: InspectConfig = Field(default_factory=InspectConfig, description="Latent pages: lens, ablation.")
    store: StoreConfig = Field(default_factory=StoreConfig, description="Store.")
    judge: JudgeConfig = Field(default_factory=JudgeConfig, description="Judge.")
    agent: AgentConfig = Field(default_factory=AgentConfig, description="Agent.")
    report: ReportConfig = Field(default_factory=ReportConfig, description="Report.")
    log: LogConfig = Field(
        default_factory=LogConfig, description="Experiment logging (TensorBoard, W&B); in no stage hash.",
        json_schema_extra=RESULT_NEUTRAL,
    )

    @field_validator("name")
    @classmethod
    def _name_is_simple(cls, v: str) -> str:
        if not v or not all(c.isalnum() or c in "-_." for c in v) or v.strip(".") == "" or ".." in v:
            raise ValueError("must be a plain name (letters, digits, -_.; no '/', '\\' or '..')")
        return v

    @model_validator(mode="after")
    def _check_models(self) -> RunConfig:
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise ValueError(f"models: names must be unique, got {names}")
        roles = [m.role for m in self.models]
        if roles.count("base") != 1:
            raise ValueError(f"models: exactly one model needs role 'base', got {roles.count('base')}")
        if roles.count("finetune") < 1:
            raise ValueError("models: at least one model needs role 'finetune'")
        if roles.count("control") > 1:
            raise ValueError("models: at most one 'control' model")
        if self.headline is not None:
            ft = {m.name for m in self.models if m.role == "finetune"}
            a, b = self.headline
            if a not in ft or b not in ft or a == b:
                raise ValueError(
                    f"headline: needs two different fine-tune names from {sorted(ft)}, got {[a, b]}"
                )
        return self

    @property
    def base(self) -> ModelSpec:
        """The base model."""
        return next(m for m in self.models if m.role == "base")

    @property
    def finetunes(self) -> list[ModelSpec]:
        """The fine-tuned models, in config order."""
        return [m for m in self.models if m.role == "finetune"]

    @property
    def control(self) -> ModelSpec | None:
        """The control model, if any."""
        return next((m for m in self.models if m.role == "control"), None)

    def resolved_run_dir(self) -> Path:
        """The run directory (run_dir, or runs/NAME)."""
        return Path(self.run_dir) if self.run_dir else Path("runs") / self.name

    def section_hash(self, *sections: str) -> str:
        """A short content hash of the named sections, used to decide whether a stage must rerun.

        Result-neutral fields (how a stage runs, not what it computes; `RESULT_NEUTRAL`) are left out.
        """
        dumped = self.model_dump(mode="json", exclude=_neutral_fields(self))
        payload = {s: dumped[s] for s in sections}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- loading


def _format_validation_error(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"]) or "<root>"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] not in ("missing",) and "input" in e and not isinstance(e["input"], dict):
            msg = f"{msg} (got {e['input']!r})"
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts)


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """Turn ['crosscoder.k=64', 'models.0.path=x'] into a nested dict (values parsed as YAML)."""
    out: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.sub=value")
        key, raw = item.split("=", 1)
        if not key or any(not p for p in key.split(".")):
            raise ConfigError(f"override {item!r}: empty key segment")
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r} conflicts with another override")
        node[parts[-1]] = value
    return out


def _merge(base: Any, update: Any) -> Any:
    if isinstance(base, dict) and isinstance(update, dict):
        merged = dict(base)
        for k, v in update.items():
            merged[k] = _merge(base.get(k), v) if k in base else v
        return merged
    if isinstance(base, list) and isinstance(update, dict) and all(k.isdigit() for k in update):
        merged_list = list(base)
        for k, v in update.items():
            i = int(k)
            if i >= len(merged_list):
                raise ConfigError(f"override index {i} out of range (list has {len(merged_list)})")
            merged_list[i] = _merge(merged_list[i], v)
        return merged_list
    return update


def build_config(data: dict[str, Any], overrides: list[str] | None = None) -> RunConfig:
    """Validate a raw dict (plus overrides) into a RunConfig; raise ConfigError with one line.

    Overrides are applied on top of the defaults merged with `data`, so `models.1.path=x` works
    whether or not the YAML lists models.
    """
    merged = _merge(RunConfig().model_dump(mode="json"), data)
    if overrides:
        merged = _merge(merged, parse_overrides(overrides))
    try:
        return RunConfig.model_validate(merged)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err)) from None


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> RunConfig:
    """Load a RunConfig from YAML (None = defaults) with `key.sub=value` overrides."""
    data: Any = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{p}: no such config file")
        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except UnicodeDecodeError as err:
            raise ConfigError(f"{p}: not UTF-8 text (byte {err.start}: {err.reason}); save it as UTF-8") from None
        except OSError as err:
            raise ConfigError(f"{p}: cannot read the config: {err.strerror or err}") from None
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark is not None else ""
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise ConfigError(f"{p}:{where}: invalid YAML: {problem}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: top level must be a mapping, got {type(data).__name__}")
    try:
        return build_config(data, overrides)
    except ConfigError as err:
        prefix = f"{path}: " if path is not None else ""
        raise ConfigError(f"{prefix}{err}") from None


def dump_config(cfg: RunConfig, path: str | Path) -> None:
    """Write cfg as YAML next to an artifact (atomically)."""
    from latentdiff.io import atomic_write_text

    atomic_write_text(Path(path), yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
