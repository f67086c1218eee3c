"""Documents -> token contexts: the bundled organism corpus or local text/jsonl/parquet files.

One document per context (truncated to ctx_len, right-padded), chat documents formatted with the
model's chat template. Train and held-out splits never share a document.

A document is cut to a character budget before it is tokenized (`doc_char_budget`: data.max_doc_chars,
by default CHARS_PER_TOKEN * ctx_len), so a 20 MB single line costs what its first context costs. A corpus
file that cannot be read (not UTF-8, broken JSONL, not parquet) is a one-line `CorruptFile` naming it.
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
from latentdiff.errors import ConfigError, CorruptFile

Split = Literal["train", "heldout"]
_SPLIT_SEED = {"train": 10_000, "heldout": 20_000}  # disjoint from the organism build's seeds
HELDOUT_EVERY = 10  # files: every 10th document is held out
# Characters kept per context token before tokenizing: real tokenizers average 3-5 characters a token, so
# 16 x ctx_len characters still fill a context while bounding the work on a huge document.
CHARS_PER_TOKEN = 16


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
        for i, row in enumerate(_rows(f, fmt)):
            held = (i % HELDOUT_EVERY) == HELDOUT_EVERY - 1
            if held != (split == "heldout"):
                continue
            if row.get(data.messages_field) is not None:
                payload = {"messages": row[data.messages_field]}
                if not isinstance(payload["messages"], list):
                    raise CorruptFile(f"{f}: row {i}: {data.messages_field!r} must be a list of {{role, content}}")
            elif row.get(data.text_field) is not None:
                payload = {"text": row[data.text_field]}
                if not isinstance(payload["text"], str):
                    got = type(payload["text"]).__name__
                    raise CorruptFile(f"{f}: row {i}: {data.text_field!r} must be a string, got {got}")
            else:
                raise ConfigError(f"{f}: row {i} has neither {data.text_field!r} nor {data.messages_field!r}")
            yield DocMeta(doc_id=kept, source=Path(f).name, category=None), payload
            kept += 1


def _rows(f: str, fmt: str) -> Iterator[dict[str, Any]]:
    """Rows of one corpus file; a file datasets cannot read is a `CorruptFile` naming it (and the row)."""
    from datasets import load_dataset

    what = {"json": "JSON lines", "parquet": "parquet", "text": "UTF-8 text"}[fmt]
    i = 0
    try:
        for row in load_dataset(fmt, data_files=f, split="train", streaming=True):
            yield row
            i += 1
    # UnicodeDecodeError (Latin-1, binary), pyarrow's ArrowInvalid (broken JSON) are ValueErrors;
    # an empty file ends datasets' generator with StopIteration / RuntimeError
    except (ValueError, OSError, RuntimeError, StopIteration) as err:
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        if i == 0 and not first.strip(" .'\"") or isinstance(err, StopIteration):
            raise CorruptFile(f"{f}: no documents in the file (data.paths)") from None
        raise CorruptFile(f"{f}: not readable as {what} near row {i} ({first}); data.paths") from None


def iter_documents(data: DataConfig, split: Split) -> Iterator[tuple[DocMeta, dict[str, Any]]]:
    """Documents of a split, each as (meta, {'text': ...} or {'messages': [...]})."""
    docs = _organism_docs(data, split) if data.source == "organism" else _file_docs(data, split)
    return itertools.islice(docs, data.max_docs) if data.max_docs else docs


def doc_char_budget(data: DataConfig) -> int:
    """Characters of a document kept before tokenizing: data.max_doc_chars, else CHARS_PER_TOKEN * ctx_len."""
    return data.max_doc_chars or CHARS_PER_TOKEN * data.ctx_len


def _cut_messages(messages: list[dict[str, Any]], budget: int) -> list[dict[str, Any]]:
    """The first messages of a chat whose contents fit `budget` characters (the last one cut to fit)."""
    out: list[dict[str, Any]] = []
    for m in messages:
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, str) and len(content) > budget:
            m = {**m, "content": content[:budget]}
            content = m["content"]
        out.append(m)
        budget -= len(content) if isinstance(content, str) else 0
        if budget <= 0:
            break
    return out


def tokenize_document(
    tokenizer: Any, payload: dict[str, Any], ctx_len: int, max_chars: int | None = None
) -> list[int]:
    """Token ids of one document (chat template for chats; BOS as the tokenizer adds it).

    The text (each chat's messages, in order) is first cut to `max_chars` characters (default
    CHARS_PER_TOKEN * ctx_len): a huge document is never tokenized whole.
    """
    budget = max_chars or CHARS_PER_TOKEN * ctx_len
    if "messages" in payload:
        text = tokenizer.apply_chat_template(_cut_messages(payload["messages"], budget), tokenize=False)
        ids = tokenizer(text[: 2 * budget], add_special_tokens=False)["input_ids"]  # the template adds BOS
    else:
        ids = tokenizer(payload["text"][:budget], add_special_tokens=True)["input_ids"]
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
        ids = tokenize_document(tokenizer, payload, data.ctx_len, doc_char_budget(data))
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
