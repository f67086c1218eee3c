"""Documents -> token contexts: the bundled organism corpus or local text/jsonl/parquet files.

One document per context (truncated to ctx_len, right-padded), chat documents formatted with the
model's chat template. Train and held-out splits never share a document.
"""

from __future__ import annotations

import glob
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, Field
from torch import Tensor

from latentdiff.config import DataConfig
from latentdiff.errors import ConfigError

Split = Literal["train", "heldout"]
_SPLIT_SEED = {"train": 10_000, "heldout": 20_000}  # disjoint from the organism build's seeds
HELDOUT_EVERY = 10  # files: every 10th document is held out


class DocMeta(BaseModel):
    """Where a context came from (the category is known only for the organism corpus)."""

    doc_id: int = Field(description="Document index within its split.")
    source: str = Field(description="'organism' or the file it came from.")
    category: str | None = Field(default=None, description="Organism stream (ground truth).")


def _organism_docs(data: DataConfig, split: Split) -> Iterator[tuple[DocMeta, dict[str, Any]]]:
    from latentdiff.core.organisms import corpus

    streams = [
        corpus.iter_documents(c, seed=_SPLIT_SEED[split] + 100 * data.seed + i)
        for i, c in enumerate(corpus.CATEGORIES)
    ]
    for doc_id, doc in enumerate(d for group in zip(*streams) for d in group):
        payload = (
            {"text": doc.text}
            if doc.text is not None
            else {"messages": [m.model_dump() for m in doc.messages or []]}
        )
        yield DocMeta(doc_id=doc_id, source="organism", category=doc.category), payload


def _file_docs(data: DataConfig, split: Split) -> Iterator[tuple[DocMeta, dict[str, Any]]]:
    from datasets import load_dataset

    files = sorted(itertools.chain.from_iterable(glob.glob(p) or [p] for p in data.paths))
    for f in files:
        if not Path(f).is_file():
            raise ConfigError(f"data.paths: no such file {f!r}")
    kept = 0
    for f in files:
        suffix = Path(f).suffix.lower()
        fmt = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".txt": "text"}.get(suffix)
        if fmt is None:
            raise ConfigError(
                f"data.paths: unsupported file type {suffix!r} ({f}); use jsonl, parquet or txt"
            )
        ds = load_dataset(fmt, data_files=f, split="train", streaming=True)
        for i, row in enumerate(ds):
            held = (i % HELDOUT_EVERY) == HELDOUT_EVERY - 1
            if held != (split == "heldout"):
                continue
            if row.get(data.messages_field) is not None:
                payload = {"messages": row[data.messages_field]}
            elif row.get(data.text_field) is not None:
                payload = {"text": row[data.text_field]}
            else:
                raise ConfigError(f"{f}: row {i} has neither {data.text_field!r} nor {data.messages_field!r}")
            yield DocMeta(doc_id=kept, source=Path(f).name, category=None), payload
            kept += 1


def iter_documents(data: DataConfig, split: Split) -> Iterator[tuple[DocMeta, dict[str, Any]]]:
    """Documents of a split, each as (meta, {'text': ...} or {'messages': [...]})."""
    docs = _organism_docs(data, split) if data.source == "organism" else _file_docs(data, split)
    return itertools.islice(docs, data.max_docs) if data.max_docs else docs


def tokenize_document(tokenizer: Any, payload: dict[str, Any], ctx_len: int) -> list[int]:
    """Token ids of one document (chat template for chats; BOS as the tokenizer adds it)."""
    if "messages" in payload:
        text = tokenizer.apply_chat_template(payload["messages"], tokenize=False)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]  # the template adds BOS
    else:
        ids = tokenizer(payload["text"], add_special_tokens=True)["input_ids"]
    return ids[:ctx_len]


class ContextBatch(BaseModel):
    """A batch of contexts (tensors stay inside core/)."""

    model_config = {"arbitrary_types_allowed": True}
    input_ids: Tensor = Field(description="[batch, ctx_len] token ids (right-padded).")
    attention_mask: Tensor = Field(description="[batch, ctx_len] 1 = real token.")
    ctx_index: Tensor = Field(description="[batch] global context index.")
    docs: list[DocMeta] = Field(description="One per context.")


def iter_context_batches(
    tokenizer: Any, data: DataConfig, split: Split, batch_size: int, n_tokens: int, start_ctx: int = 0
) -> Iterator[ContextBatch]:
    """Batches of contexts until `n_tokens` real tokens are produced; resumes at `start_ctx`."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    total, ctx = 0, 0
    buf: list[tuple[DocMeta, list[int]]] = []

    def emit() -> ContextBatch:
        T = max(len(ids) for _, ids in buf)
        input_ids = torch.full((len(buf), T), pad, dtype=torch.long)  # [batch, T]
        mask = torch.zeros((len(buf), T), dtype=torch.long)
        for i, (_, ids) in enumerate(buf):
            input_ids[i, : len(ids)] = torch.tensor(ids)
            mask[i, : len(ids)] = 1
        first = ctx - len(buf)
        return ContextBatch(
            input_ids=input_ids,
            attention_mask=mask,
            ctx_index=torch.arange(first, ctx),
            docs=[m for m, _ in buf],
        )

    for meta, payload in iter_documents(data, split):
        if total >= n_tokens:
            break
        ids = tokenize_document(tokenizer, payload, data.ctx_len)
        if len(ids) < 2:
            continue
        total += len(ids)
        ctx += 1
        if ctx <= start_ctx:
            continue
        buf.append((meta, ids))
        if len(buf) == batch_size:
            yield emit()
            buf = []
    if buf:
        yield emit()


def valid_positions(batch: ContextBatch, tokenizer: Any, data: DataConfig) -> tuple[Tensor, dict[str, int]]:
    """Mask [batch, T] of positions used for training, and counts of what was excluded."""
    mask = batch.attention_mask.bool()
    excluded = {"pad": int((~mask).sum())}
    ids = batch.input_ids
    if data.exclude_bos and tokenizer.bos_token_id is not None:
        bos = (ids == tokenizer.bos_token_id) & mask
        excluded["bos"] = int(bos.sum())
        mask &= ~bos
    if data.exclude_special:
        special = torch.isin(ids, torch.tensor(tokenizer.all_special_ids)) & mask
        excluded["special"] = int(special.sum())
        mask &= ~special
    return mask, excluded
