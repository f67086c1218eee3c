"""Documents -> token contexts: the bundled organism corpus, local text/jsonl/parquet files, or a dataset
read through the `datasets` library (a hub id or a local dataset directory, data.source='hf').

One document per context (truncated to ctx_len, right-padded), chat documents formatted with the
model's chat template (or data.chat_template). Train and held-out splits never share a document: for
files and HF datasets every HELDOUT_EVERY-th row is held out, unless data.heldout_split names another split.

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

from latentdiff.config import HUB_ID_RE, DataConfig
from latentdiff.errors import ConfigError, CorruptFile

Split = Literal["train", "heldout"]
_SPLIT_SEED = {"train": 10_000, "heldout": 20_000}  # disjoint from the organism build's seeds
HELDOUT_EVERY = 10  # files and HF datasets: every 10th row is held out (the train split gets the others)
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
            payload = _payload(row, data, f"{f}: row {i}")
            yield DocMeta(doc_id=kept, source=Path(f).name, category=None), payload
            kept += 1


def _payload(row: dict[str, Any], data: DataConfig, where: str) -> dict[str, Any]:
    """{'messages': [...]} or {'text': ...} of one row (the messages field wins); `where` names the row."""
    if row.get(data.messages_field) is not None:
        messages = row[data.messages_field]
        if not isinstance(messages, list):
            raise CorruptFile(f"{where}: {data.messages_field!r} must be a list of {{role, content}}")
        return {"messages": messages}
    if row.get(data.text_field) is not None:
        text = row[data.text_field]
        if not isinstance(text, str):
            raise CorruptFile(f"{where}: {data.text_field!r} must be a string, got {type(text).__name__}")
        return {"text": text}
    raise ConfigError(
        f"{where} has neither {data.text_field!r} nor {data.messages_field!r} (columns: {', '.join(row)})"
    )


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__


def _offline_snapshot(data: DataConfig, name: str) -> str:
    """data.id, or under HF_HUB_OFFLINE=1 the snapshot directory of hub dataset data.id at data.revision in
    the local huggingface_hub cache (`datasets` alone, offline, finds only datasets it prepared itself).

    Online, the id is left to `datasets`, which streams it without downloading the whole repository.
    """
    assert data.id is not None
    if Path(data.id).expanduser().exists() or not HUB_ID_RE.fullmatch(data.id):
        return data.id
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    if not constants.HF_HUB_OFFLINE:
        return data.id
    try:
        return snapshot_download(data.id, repo_type="dataset", revision=data.revision, local_files_only=True)
    except (LocalEntryNotFoundError, OSError, ValueError) as err:
        rev = f" at revision {data.revision!r}" if data.revision else ""
        raise ConfigError(
            f"data.id {data.id!r}: cannot load split {name!r}: not in the local hub cache{rev} and HF_HUB_OFFLINE=1 "
            f"({_first_line(err)})"
        ) from None


def _hf_dataset(data: DataConfig, name: str) -> Any:
    """Split `name` of data.id: a memory-mapped `Dataset` or an `IterableDataset` (streaming).

    A directory written by `save_to_disk` (state.json: one Dataset; dataset_dict.json: a DatasetDict) goes
    through `load_from_disk`, anything else (hub id, data-file directory) through `load_dataset`. Neither
    reads the whole dataset into memory.
    """
    import datasets
    from datasets.exceptions import DatasetsError

    assert data.id is not None  # DataConfig checks source='hf' has an id
    path = Path(data.id).expanduser()
    single, as_dict = (path / "state.json").is_file(), (path / "dataset_dict.json").is_file()
    saved = path.is_dir() and (single or as_dict)
    streaming = data.streaming if data.streaming is not None else not saved
    try:
        if not saved:
            source, revision = _offline_snapshot(data, name), data.revision
            if source != data.id:  # a hub id read from the local huggingface_hub cache: a data-file directory
                revision = None
            return datasets.load_dataset(source, data.config, split=name, revision=revision, streaming=streaming)
        ds = datasets.load_from_disk(str(path))
    # DatasetNotFoundError and DataFilesNotFoundError are FileNotFoundErrors, no network is a ConnectionError,
    # hub HTTP errors are OSErrors; a bad split or config name is a ValueError
    except (DatasetsError, OSError, ValueError) as err:
        raise ConfigError(f"data.id {data.id!r}: cannot load split {name!r} ({_first_line(err)})") from None
    if isinstance(ds, datasets.DatasetDict):
        if name not in ds:
            raise ConfigError(f"data.id {data.id!r}: no split {name!r} (data.split); it has {', '.join(ds)}")
        ds = ds[name]
    elif data.heldout_split is not None:
        raise ConfigError(
            f"data.heldout_split: {data.id!r} is a single saved Dataset without splits; unset heldout_split "
            "(every 10th row is then held out) or save a DatasetDict"
        )
    return ds.to_iterable_dataset() if streaming else ds


def _hf_docs(data: DataConfig, split: Split) -> Iterator[tuple[DocMeta, dict[str, Any]]]:
    """Documents of an HF dataset split, row by row (memory stays flat in the dataset's size).

    Held out: every HELDOUT_EVERY-th row of data.split (the train split gets the others), or all of
    data.heldout_split when it is set (the train split then gets all of data.split).
    """
    own_split = split == "heldout" and data.heldout_split is not None
    name = data.heldout_split if own_split else (data.split or "train")
    assert name is not None
    every = None if data.heldout_split is not None else HELDOUT_EVERY
    ds = _hf_dataset(data, name)
    columns = ds.column_names  # None for some streamed datasets: then each row is checked
    if columns is not None:
        present = [c for c in (data.messages_field, data.text_field) if c in columns]
        if not present:
            raise ConfigError(
                f"data.id {data.id!r} split {name!r}: no column {data.text_field!r} (data.text_field) or "
                f"{data.messages_field!r} (data.messages_field); columns: {', '.join(columns)}"
            )
        ds = ds.select_columns(present)  # never decode the other columns
    kept = 0
    for i, row in enumerate(_hf_rows(ds, data, name)):
        if every is not None and ((i % every) == every - 1) != (split == "heldout"):
            continue
        payload = _payload(row, data, f"data.id {data.id!r} split {name!r}: row {i}")
        yield DocMeta(doc_id=kept, source=data.id or "hf", category=None), payload
        kept += 1


def _hf_rows(ds: Any, data: DataConfig, name: str) -> Iterator[dict[str, Any]]:
    """Rows of a loaded split; a failure while reading (network, broken file) is one line naming data.id."""
    from datasets.exceptions import DatasetsError

    i = 0
    try:
        for row in ds:
            yield row
            i += 1
    except (DatasetsError, OSError, ValueError) as err:
        where = f"data.id {data.id!r} split {name!r}"
        raise CorruptFile(f"{where}: reading failed near row {i} ({_first_line(err)})") from None


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
    sources = {"organism": _organism_docs, "files": _file_docs, "hf": _hf_docs}
    docs = sources[data.source](data, split)
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
    tokenizer: Any,
    payload: dict[str, Any],
    ctx_len: int,
    max_chars: int | None = None,
    chat_template: str | None = None,
) -> list[int]:
    """Token ids of one document (chat template for chats; BOS as the tokenizer adds it).

    The text (each chat's messages, in order) is first cut to `max_chars` characters (default
    CHARS_PER_TOKEN * ctx_len): a huge document is never tokenized whole. `chat_template` (Jinja text,
    data.chat_template) replaces the tokenizer's own template; a chat meeting neither is a ConfigError.
    """
    budget = max_chars or CHARS_PER_TOKEN * ctx_len
    if "messages" in payload:
        text = _format_chat(tokenizer, _cut_messages(payload["messages"], budget), chat_template)
        ids = tokenizer(text[: 2 * budget], add_special_tokens=False)["input_ids"]  # the template adds BOS
    else:
        ids = tokenizer(payload["text"][:budget], add_special_tokens=True)["input_ids"]
    return ids[:ctx_len]


def _format_chat(tokenizer: Any, messages: list[dict[str, Any]], chat_template: str | None) -> str:
    """A chat as text through `chat_template` or the tokenizer's template; one line when neither works."""
    import jinja2

    # a tokenizer-like object without the attribute (a wrapper) is left to apply_chat_template
    if chat_template is None and hasattr(tokenizer, "chat_template") and not tokenizer.chat_template:
        name = getattr(tokenizer, "name_or_path", "") or "models[0]"
        raise ConfigError(
            f"model {name!r} has no chat template and the data has chat messages: set data.chat_template "
            "(a Jinja string or a .jinja file)"
        )
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, chat_template=chat_template)
    except jinja2.TemplateError as err:
        which = "data.chat_template" if chat_template is not None else "the tokenizer's chat template"
        raise ConfigError(f"{which} failed on a chat document: {_first_line(err)}") from None


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
    chat_template = data.chat_template_text()
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
        ids = tokenize_document(tokenizer, payload, data.ctx_len, doc_char_budget(data), chat_template)
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
