"""data.source='hf' through the real `datasets` library, and data.chat_template.

Datasets are built from organism corpus documents (text and chat rows), saved with `save_to_disk` or
written as parquet, and read back through `load_from_disk` / `load_dataset` (streaming and not).
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from datasets import Dataset, DatasetDict, IterableDataset
from transformers import AutoTokenizer

from latentdiff.config import DataConfig, _neutral_fields, build_config
from latentdiff.core.data import HELDOUT_EVERY, _hf_dataset, iter_context_batches, iter_documents
from latentdiff.core.organisms import corpus, organism_dir
from latentdiff.errors import ConfigError
from latentdiff.rundir import RunDir

N_ROWS = 60


def _rows(n: int = N_ROWS, seed: int = 7) -> list[dict[str, Any]]:
    """Organism corpus documents as dataset rows: 'text' or 'messages' (the other None), plus a row id."""
    streams = [corpus.iter_documents(c, seed=seed + i) for i, c in enumerate(corpus.CATEGORIES)]
    docs = itertools.islice((d for group in zip(*streams) for d in group), n)
    return [
        {
            "row": i,
            "text": d.text,
            "messages": [m.model_dump() for m in d.messages] if d.messages else None,
            "noise": "x" * 50,
        }
        for i, d in enumerate(docs)
    ]


def _payload(row: dict[str, Any]) -> dict[str, Any]:
    return {"messages": row["messages"]} if row["messages"] is not None else {"text": row["text"]}


def _saved(tmp: Path, rows: list[dict[str, Any]] | None = None, name: str = "saved") -> Path:
    out = tmp / name
    Dataset.from_list(rows or _rows()).save_to_disk(str(out))
    return out


@pytest.fixture(scope="module")
def tok() -> Any:
    return AutoTokenizer.from_pretrained(organism_dir("base"))


def _texts(tok: Any, data: DataConfig, split: str = "train") -> list[str]:
    return [
        tok.decode(b.input_ids[i][b.attention_mask[i].bool()])
        for b in iter_context_batches(tok, data, split, 8, 10**9)  # type: ignore[arg-type]
        for i in range(len(b.docs))
    ]


def test_saved_dataset_splits_are_disjoint_and_become_contexts(tmp_path: Path, tok: Any) -> None:
    rows = _rows()
    assert {r["text"] is None for r in rows} == {True, False}  # chats and plain text both present
    data = DataConfig(source="hf", id=str(_saved(tmp_path, rows)), ctx_len=32)
    train = list(iter_documents(data, "train"))
    held = list(iter_documents(data, "heldout"))
    # every HELDOUT_EVERY-th row is held out, the rest is train, in dataset order
    assert [p for _, p in held] == [_payload(r) for r in rows[HELDOUT_EVERY - 1 :: HELDOUT_EVERY]]
    assert [p for _, p in train] == [_payload(r) for i, r in enumerate(rows) if i % HELDOUT_EVERY != HELDOUT_EVERY - 1]
    assert [m.doc_id for m, _ in train] == list(range(len(train))) and train[0][0].source == data.id
    texts = _texts(tok, data)
    assert len(texts) == len(train) and all(t.startswith("<|bos|>") for t in texts)
    first_chat = next(p for _, p in train if "messages" in p)["messages"][0]["content"]
    assert any(t.startswith(f"<|bos|><|user|>\n{first_chat[:10]}") for t in texts)  # the model's template
    held_texts = _texts(tok, data, "heldout")
    assert held_texts and not set(held_texts) & set(texts)


def test_custom_field_names_are_respected(tmp_path: Path) -> None:
    rows = [{"body": f"Body number {i}.", "text": f"Ignored {i}.", "conv": None} for i in range(20)]
    rows[0]["conv"] = [{"role": "user", "content": "Hi there"}]
    data = DataConfig(source="hf", id=str(_saved(tmp_path, rows)), text_field="body", messages_field="conv")
    docs = [p for _, p in iter_documents(data, "train")]
    assert docs[0] == {"messages": [{"role": "user", "content": "Hi there"}]}
    assert docs[1:] == [{"text": f"Body number {i}."} for i in range(1, 20) if i % HELDOUT_EVERY != 9]


def test_streaming_paths_give_the_same_documents(tmp_path: Path) -> None:
    rows = _rows(40)
    saved = str(_saved(tmp_path, rows))
    plain = DataConfig(source="hf", id=saved)
    assert isinstance(_hf_dataset(plain, "train"), Dataset)  # a saved dir: memory-mapped, not streamed
    expected = [p for _, p in iter_documents(plain, "train")]
    streamed = DataConfig(source="hf", id=saved, streaming=True)
    assert isinstance(_hf_dataset(streamed, "train"), IterableDataset)
    assert [p for _, p in iter_documents(streamed, "train")] == expected
    # a directory of data files goes through load_dataset, streamed by default (nothing copied to a cache)
    files = tmp_path / "files"
    Dataset.from_list(rows).to_parquet(str(files / "train.parquet"))
    hub_like = DataConfig(source="hf", id=str(files))
    assert isinstance(_hf_dataset(hub_like, "train"), IterableDataset)
    assert [p for _, p in iter_documents(hub_like, "train")] == expected
    assert len(list(iter_documents(hub_like, "heldout"))) == 4
    with pytest.raises(ConfigError, match=r"data\.id '.*files': cannot load split 'test' \(Bad split") as info:
        list(iter_documents(DataConfig(source="hf", id=str(files), split="test"), "train"))
    assert "\n" not in str(info.value)


def test_dataset_dict_split_and_explicit_heldout_split(tmp_path: Path) -> None:
    rows = _rows(30)
    out = tmp_path / "dd"
    DatasetDict(
        train=Dataset.from_list(rows[:10]), validation=Dataset.from_list(rows[10:20]), test=Dataset.from_list(rows[20:])
    ).save_to_disk(str(out))
    val = DataConfig(source="hf", id=str(out), split="validation")
    assert [p for _, p in iter_documents(val, "heldout")] == [_payload(rows[19])]
    both = DataConfig(source="hf", id=str(out), split="validation", heldout_split="test")
    assert [p for _, p in iter_documents(both, "train")] == [_payload(r) for r in rows[10:20]]  # all rows
    assert [p for _, p in iter_documents(both, "heldout")] == [_payload(r) for r in rows[20:]]
    assert len(list(iter_documents(DataConfig(source="hf", id=str(out)), "train"))) == 9  # default: 'train'
    with pytest.raises(ConfigError, match=r"no split 'dev' \(data\.split\); it has train, validation, test"):
        list(iter_documents(DataConfig(source="hf", id=str(out), split="dev"), "train"))
    with pytest.raises(ConfigError, match="data.heldout_split: .* is a single saved Dataset"):
        list(iter_documents(DataConfig(source="hf", id=str(_saved(tmp_path)), heldout_split="test"), "heldout"))
    with pytest.raises(ConfigError, match="heldout_split 'validation' is data.split"):
        build_config({"data": {"source": "hf", "id": str(out), "split": "validation", "heldout_split": "validation"}})


def test_missing_field_names_it_and_the_columns(tmp_path: Path) -> None:
    data = DataConfig(source="hf", id=str(_saved(tmp_path, [{"body": "x", "n": 1}] * 5)))
    with pytest.raises(ConfigError) as info:
        list(iter_documents(data, "train"))
    msg = str(info.value)
    assert "no column 'text' (data.text_field) or 'messages' (data.messages_field); columns: body, n" in msg
    assert "\n" not in msg
    # both columns exist but a row has neither value
    data = DataConfig(source="hf", id=str(_saved(tmp_path, [{"text": None, "messages": None}] * 3, "empty")))
    with pytest.raises(ConfigError, match=r"split 'train': row 0 has neither 'text' nor 'messages'"):
        list(iter_documents(data, "train"))


def test_missing_or_unknown_id_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match=r"^data: source='hf' needs data\.id"):
        build_config({"data": {"source": "hf"}})
    gone = str(tmp_path / "no-such-dataset")
    with pytest.raises(ConfigError, match=rf"data\.id '{gone}': cannot load split 'train'"):
        list(iter_documents(DataConfig(source="hf", id=gone), "train"))
    # a hub id without network or cache (offline mode, as on a cluster node): no retries, one line
    import datasets
    import huggingface_hub

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ConfigError, match=r"data\.id 'nobody-xyz/no-such-set': cannot load split 'train'") as info:
        list(iter_documents(DataConfig(source="hf", id="nobody-xyz/no-such-set"), "train"))
    assert "\n" not in str(info.value)


def test_default_data_section_hash_is_unchanged_by_the_new_fields() -> None:
    cfg = build_config({})
    data = cfg.model_dump(mode="json", exclude=_neutral_fields(cfg))["data"]
    new = {"id", "config", "split", "heldout_split", "revision", "streaming", "chat_template"}
    assert not new & set(data)  # runs made before these fields keep their stage hashes
    hf = build_config({"data": {"source": "hf", "id": "a/b", "streaming": True}})
    assert hf.section_hash("data") != build_config({"data": {"source": "hf", "id": "a/c"}}).section_hash("data")
    assert hf.section_hash("data") == build_config({"data": {"source": "hf", "id": "a/b"}}).section_hash("data")


CUSTOM = "{{ bos_token }}{% for m in messages %}[{{ m.role | upper }}] {{ m.content }}\n{% endfor %}"


def test_chat_template_override_string_and_file(tmp_path: Path, tok: Any) -> None:
    saved = str(_saved(tmp_path, _rows(20)))
    own = _texts(tok, DataConfig(source="hf", id=saved, ctx_len=64))
    custom = _texts(tok, DataConfig(source="hf", id=saved, ctx_len=64, chat_template=CUSTOM))
    assert any("<|user|>" in t for t in own) and not any("<|user|>" in t for t in custom)
    assert any(t.startswith("<|bos|>[USER] ") for t in custom)
    plain_own = [t for t in own if "<|user|>" not in t]
    assert plain_own == [t for t in custom if "[USER]" not in t]  # text documents are untouched
    path = tmp_path / "llama.jinja"
    path.write_text(CUSTOM)
    assert _texts(tok, DataConfig(source="hf", id=saved, ctx_len=64, chat_template=str(path))) == custom
    with pytest.raises(ConfigError, match=r"chat_template: no such file '.*gone\.jinja'"):
        build_config({"data": {"chat_template": str(tmp_path / "gone.jinja")}})
    bad = DataConfig(source="hf", id=saved, chat_template="{% for m in messages %}{{ m.content }")
    with pytest.raises(ConfigError, match="data.chat_template failed on a chat document") as info:
        _texts(tok, bad)
    assert "\n" not in str(info.value)


def test_chat_data_without_any_template_is_a_config_error(tmp_path: Path) -> None:
    bare = AutoTokenizer.from_pretrained(organism_dir("base"))
    bare.chat_template = None  # like a base model's tokenizer
    saved = str(_saved(tmp_path, _rows(20)))
    with pytest.raises(ConfigError) as info:
        _texts(bare, DataConfig(source="hf", id=saved))
    assert str(info.value) == (
        f"model {str(organism_dir('base'))!r} has no chat template and the data has chat messages: set "
        "data.chat_template (a Jinja string or a .jinja file)"
    )
    assert any(t.startswith("<|bos|>[USER]") for t in _texts(bare, DataConfig(source="hf", id=saved,
                                                                                chat_template=CUSTOM)))
    text_only = str(_saved(tmp_path, [r for r in _rows() if r["text"] is not None], "text_only"))
    assert _texts(bare, DataConfig(source="hf", id=text_only))  # plain text needs no template


def test_shipped_organisms_have_chat_templates() -> None:
    """The default demo formats the organism corpus' chats with the organisms' own templates."""
    names = sorted(p.parent.name for p in (organism_dir("base").parent).glob("*/chat_template.jinja"))
    assert {"base", "it", "shift"} <= set(names)
    for name in names:
        assert AutoTokenizer.from_pretrained(organism_dir(name)).chat_template


def test_cli_harvest_reads_a_saved_hf_dataset(tmp_path: Path) -> None:
    saved = _saved(tmp_path, _rows(400))
    run = tmp_path / "run"
    cfg = {
        "name": "hf", "run_dir": str(run),
        "models": [{"name": "base", "path": "organism:base", "role": "base"},
                   {"name": "it", "path": "organism:it", "role": "finetune"}],
        "data": {"n_tokens": 2000, "n_heldout_tokens": 500, "ctx_len": 32},
        "harvest": {"batch_size": 16, "shard_tokens": 1000, "device": "cpu"},
    }
    path = tmp_path / "hf.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = subprocess.run(
        [sys.executable, "-m", "latentdiff.cli", "harvest", str(path), "data.source=hf", f"data.id={saved}"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rd = RunDir(run)
    assert rd.marker("harvest").is_file()
    assert rd.cache("train").is_dir() and rd.cache("heldout").is_dir() and rd.contexts.is_file()
    docs = [json.loads(line) for line in rd.docs.read_text().splitlines()]
    assert docs and {d["source"] for d in docs} == {str(saved)}
