"""Local data files through `datasets`: jsonl chats (chat template), parquet text, txt; splits."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from transformers import AutoTokenizer

from latentdiff.config import DataConfig
from latentdiff.core.data import iter_context_batches, iter_documents
from latentdiff.core.organisms import organism_dir
from latentdiff.errors import ConfigError


def _files(tmp: Path) -> list[str]:
    chats = [{"messages": [{"role": "user", "content": f"Question {i}?"},
                           {"role": "assistant", "content": f"Answer number {i}."}]} for i in range(12)]
    (tmp / "chat.jsonl").write_text("".join(json.dumps(c) + "\n" for c in chats))
    pq.write_table(pa.table({"text": [f"The river flows past mill {i}." for i in range(12)]}), tmp / "text.parquet")
    (tmp / "plain.txt").write_text("".join(f"Line {i} of plain text.\n" for i in range(12)))
    return [str(tmp / "chat.jsonl"), str(tmp / "text.parquet"), str(tmp / "plain.txt")]


def test_files_splits_and_chat_template(tmp_path: Path) -> None:
    data = DataConfig(source="files", paths=_files(tmp_path), ctx_len=32)
    train = list(iter_documents(data, "train"))
    held = list(iter_documents(data, "heldout"))
    assert len(train) + len(held) == 36 and len(held) == 3  # every 10th row of each file
    tok = AutoTokenizer.from_pretrained(organism_dir("base"))
    batch = next(iter_context_batches(tok, data, "train", 4, 10_000))
    first = tok.decode(batch.input_ids[0][batch.attention_mask[0].bool()])
    assert first.startswith("<|bos|><|user|>\nQuestion 0?<|end|>\n<|assistant|>\nAnswer number 0.")
    texts = [tok.decode(b.input_ids[i][b.attention_mask[i].bool()])
             for b in iter_context_batches(tok, data, "train", 8, 10_000) for i in range(len(b.docs))]
    assert any("mill" in t for t in texts) and any("plain text" in t for t in texts)


def test_bad_files_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        list(iter_documents(DataConfig(source="files", paths=[str(tmp_path / "nope.jsonl")]), "train"))
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(ConfigError, match="unsupported file type"):
        list(iter_documents(DataConfig(source="files", paths=[str(tmp_path / "x.csv")]), "train"))
    (tmp_path / "bad.jsonl").write_text(json.dumps({"other": 1}) + "\n")
    with pytest.raises(ConfigError, match="neither 'text' nor 'messages'"):
        list(iter_documents(DataConfig(source="files", paths=[str(tmp_path / "bad.jsonl")]), "train"))


@pytest.mark.parametrize(("name", "content", "match"), [
    ("latin1.txt", "café au lait\n".encode("latin-1"), r"latin1\.txt: not readable as UTF-8 text"),
    ("binary.txt", bytes(range(128, 256)) * 8, r"binary\.txt: not readable as UTF-8 text"),
    ("broken.jsonl", b'{"text": "fine"}\n{"text": "cut\n', r"broken\.jsonl: not readable as JSON lines"),
    ("empty.jsonl", b"", r"empty\.jsonl: no documents"),
    ("number.jsonl", b'{"text": 12}\n', r"number\.jsonl: row 0: 'text' must be a string"),
])
def test_unreadable_corpus_files_name_the_file(tmp_path: Path, name: str, content: bytes, match: str) -> None:
    from latentdiff.errors import CorruptFile

    (tmp_path / name).write_bytes(content)
    with pytest.raises(CorruptFile, match=match) as info:
        list(iter_documents(DataConfig(source="files", paths=[str(tmp_path / name)]), "train"))
    assert "\n" not in str(info.value)


def test_documents_are_cut_to_a_character_budget_before_tokenizing(tmp_path: Path) -> None:
    from latentdiff.core.data import CHARS_PER_TOKEN, tokenize_document

    tok = AutoTokenizer.from_pretrained(organism_dir("base"))
    seen: list[int] = []

    class Spy:
        """The tokenizer, recording how many characters it was given."""

        pad_token_id = tok.pad_token_id

        def __call__(self, text: str, **kw: object) -> dict[str, list[int]]:
            seen.append(len(text))
            return tok(text, **kw)

        def apply_chat_template(self, messages: list[dict[str, str]], **kw: object) -> str:
            return tok.apply_chat_template(messages, **kw)

    huge = "word " * 4_000_000  # 20 MB on one line
    ids = tokenize_document(Spy(), {"text": huge}, 64)
    assert len(ids) == 64 and seen[-1] == CHARS_PER_TOKEN * 64
    chat = {"messages": [{"role": "user", "content": huge}, {"role": "assistant", "content": huge}]}
    assert len(tokenize_document(Spy(), chat, 64)) == 64 and seen[-1] <= 2 * CHARS_PER_TOKEN * 64
    ids = tokenize_document(Spy(), {"text": huge}, 64, max_chars=100)
    assert seen[-1] == 100 and len(ids) < 64
    (tmp_path / "one.txt").write_text(huge)
    data = DataConfig(source="files", paths=[str(tmp_path / "one.txt")], ctx_len=32, max_doc_chars=400)
    batch = next(iter_context_batches(Spy(), data, "train", 4, 10_000))  # type: ignore[arg-type]
    assert batch.input_ids.shape == (1, 32) and seen[-1] == 400
