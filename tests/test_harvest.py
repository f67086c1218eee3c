"""Harvest on the shipped organisms: stop-at-layer equals hidden_states, checks, resumable cache."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from latentdiff.config import DataConfig, HarvestConfig, ModelSpec
from latentdiff.core import cache as cache_mod
from latentdiff.core.cache import ShuffledStream, iter_shards, read_manifest
from latentdiff.core.data import iter_context_batches, valid_positions
from latentdiff.core.harvest import harvest_to_cache
from latentdiff.core.models import check_compatible, forward_to_layer, load_model
from latentdiff.core.organisms import organism_dir
from latentdiff.errors import ConfigError, ModelLoadError


@pytest.fixture(scope="module")
def models():
    specs = [ModelSpec(name="base", path="organism:base", role="base"),
             ModelSpec(name="shift", path="organism:shift", role="finetune")]
    return [load_model(s, "cpu") for s in specs]


def test_forward_to_layer_matches_hidden_states(models) -> None:
    m = models[0]
    layer = check_compatible(models, None)
    assert layer == (m.n_layers - 1) // 2
    batch = next(iter_context_batches(m.tokenizer, DataConfig(ctx_len=64), "train", 4, 10_000))
    with torch.no_grad():
        ref = m.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                      output_hidden_states=True).hidden_states[layer + 1]
    hooks_before = dict(m.layers[layer]._forward_hooks)
    got = forward_to_layer(m, batch.input_ids, batch.attention_mask, layer)
    mask = batch.attention_mask.bool()
    torch.testing.assert_close(got[mask], ref[mask])
    assert dict(m.layers[layer]._forward_hooks) == hooks_before, "capture hook must be removed"


def test_bad_layer_and_tokenizer_mismatch_are_one_line(models, tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"layer 9 is out of range: the models have 4 blocks"):
        check_compatible(models, 9)
    other = tmp_path / "other"
    shutil.copytree(organism_dir("shift"), other)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(other)
    tok.add_tokens(["<|extra|>"])
    tok.save_pretrained(other)
    mismatched = load_model(ModelSpec(name="odd", path=str(other), role="finetune"), "cpu")
    with pytest.raises(ModelLoadError, match="tokenizers differ") as info:
        check_compatible([models[0], mismatched], None)
    assert "\n" not in str(info.value)
    with pytest.raises(ModelLoadError, match="cannot load"):
        load_model(ModelSpec(name="x", path=str(tmp_path / "missing"), role="base"), "cpu")


def test_exclusions_recorded(models) -> None:
    tok = models[0].tokenizer
    batch = next(iter_context_batches(tok, DataConfig(ctx_len=64), "train", 8, 10_000))
    mask, excluded = valid_positions(batch, tok, DataConfig(ctx_len=64))
    assert excluded["bos"] == 8  # one BOS per context
    assert excluded["pad"] == int((batch.attention_mask == 0).sum())
    assert not mask[:, 0].any()
    _, with_special = valid_positions(batch, tok, DataConfig(ctx_len=64, exclude_special=True))
    assert with_special["special"] > 0  # chat role markers and <|end|>


def test_cache_resumes_after_interruption(models, tmp_path: Path, monkeypatch) -> None:
    layer = check_compatible(models, None)
    data, harvest = DataConfig(ctx_len=64), HarvestConfig(batch_size=8, shard_tokens=600, cache_dtype="float32")
    full = harvest_to_cache(models, layer, data, harvest, "train", 4000, tmp_path / "full", "h", show=False)
    original = cache_mod.ShardWriter.flush
    calls = {"n": 0}

    def dying_flush(self, ctx_end):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("simulated kill")
        return original(self, ctx_end)

    monkeypatch.setattr(cache_mod.ShardWriter, "flush", dying_flush)
    with pytest.raises(KeyboardInterrupt):
        harvest_to_cache(models, layer, data, harvest, "train", 4000, tmp_path / "part", "h", show=False)
    monkeypatch.setattr(cache_mod.ShardWriter, "flush", original)
    partial = read_manifest(tmp_path / "part")
    assert partial is not None and len(partial.shards) == 2 and not partial.complete
    resumed = harvest_to_cache(models, layer, data, harvest, "train", 4000, tmp_path / "part", "h", show=False)
    assert [s.model_dump() for s in resumed.shards] == [s.model_dump() for s in full.shards]
    for a, b in zip(iter_shards(tmp_path / "full", ("acts", "ctx", "pos")),
                    iter_shards(tmp_path / "part", ("acts", "ctx", "pos"))):
        for k in a:
            torch.testing.assert_close(a[k], b[k])
    with pytest.raises(ConfigError, match="other settings"):
        harvest_to_cache(models, layer, data, harvest, "train", 4000, tmp_path / "part", "other", show=False)


def test_shuffled_stream_resume_is_a_suffix(models, tmp_path: Path) -> None:
    layer = check_compatible(models, None)
    harvest_to_cache(models, layer, DataConfig(ctx_len=64), HarvestConfig(batch_size=8, shard_tokens=300),
                     "train", 3000, tmp_path / "c", "h", show=False)
    stream = ShuffledStream(tmp_path / "c", batch_size=64, seed=3, window_shards=2)
    first = [b for _, b in zip(range(12), stream.batches())]
    later = [b for _, b in zip(range(7), stream.batches(start=5))]
    for a, b in zip(first[5:], later):
        torch.testing.assert_close(a, b)
    assert first[0].shape == (64, 2, models[0].d_model)


def test_corpus_that_runs_out_is_an_error_below_the_floor_and_a_warning_above(
    models, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import json

    from latentdiff.core.harvest import MIN_TOKEN_FRACTION
    from latentdiff.errors import NotEnoughData

    layer = check_compatible(models, None)
    corpus = tmp_path / "small.jsonl"
    corpus.write_text("".join(json.dumps({"text": f"Short document number {i} about rivers."}) + "\n"
                              for i in range(20)))
    data = DataConfig(source="files", paths=[str(corpus)], ctx_len=32)
    harvest = HarvestConfig(batch_size=8, shard_tokens=10_000, cache_dtype="float32")
    with pytest.raises(NotEnoughData, match=r"data\.n_tokens=2000: data\.paths .*small\.jsonl.* gave only \d+ train") \
            as info:
        harvest_to_cache(models, layer, data, harvest, "train", 2000, tmp_path / "a", "h", show=False)
    assert "\n" not in str(info.value)
    stuck = read_manifest(tmp_path / "a")
    assert stuck is not None and not stuck.complete and stuck.corpus_exhausted
    got = stuck.n_tokens
    asked = int(got / (MIN_TOKEN_FRACTION + 0.1))  # the corpus gives ~60% of it: enough, with a warning
    with caplog.at_level("WARNING"):
        m = harvest_to_cache(models, layer, data, harvest, "train", asked, tmp_path / "b", "h", show=False)
    assert m.complete and m.corpus_exhausted and m.n_tokens == got and m.requested_tokens == asked
    assert any(f"ran out after {got} train tokens" in r.getMessage() for r in caplog.records)
    on_disk = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert on_disk["n_tokens"] == got and on_disk["requested_tokens"] == asked and on_disk["corpus_exhausted"]
    full = harvest_to_cache(models, layer, data, harvest, "train", got, tmp_path / "c", "h", show=False)
    assert not full.corpus_exhausted


def test_unreadable_cache_files_name_the_file(models, tmp_path: Path) -> None:
    from latentdiff.core.cache import load_stats
    from latentdiff.errors import CorruptFile

    layer = check_compatible(models, None)
    harvest_to_cache(models, layer, DataConfig(ctx_len=64), HarvestConfig(batch_size=8, shard_tokens=300),
                     "train", 600, tmp_path / "c", "h", show=False)
    shard = tmp_path / "c" / "shard_00000.safetensors"
    shard.write_bytes(shard.read_bytes()[:200])
    with pytest.raises(CorruptFile, match=r"shard_00000\.safetensors: unreadable activation cache shard"):
        next(iter_shards(tmp_path / "c"))
    with pytest.raises(CorruptFile, match=r"stats\.safetensors: missing"):
        load_stats(tmp_path / "c")
    (tmp_path / "c" / "manifest.json").write_text('{"models": ["a"], "layer": "x"')
    with pytest.raises(CorruptFile, match=r"manifest\.json: not a valid cache manifest"):
        read_manifest(tmp_path / "c")


def test_heldout_token_ids_are_kept_while_harvesting_and_reread_only_after_a_resume(tmp_path: Path) -> None:
    import numpy as np

    from latentdiff.rundir import RunDir
    from latentdiff.stages import run_harvest
    from tests.conftest import small_run_config

    cfg = small_run_config(tmp_path / "run", data={"n_tokens": 2_000, "n_heldout_tokens": 3_000, "ctx_len": 64})
    rd = RunDir.of(tmp_path / "run")
    tok = load_model(cfg.models[0], "cpu").tokenizer
    run_harvest(cfg, rd, show=False)
    ids, docs = np.load(rd.contexts), rd.docs.read_text().splitlines()
    n_ctx = read_manifest(rd.cache("heldout")).n_contexts
    assert ids.shape == (n_ctx, 64) and len(docs) == n_ctx
    want = np.full_like(ids, -1)  # what a second tokenization of the held-out split gives
    for batch in iter_context_batches(tok, cfg.data, "heldout", 256, 10**15):
        for row, ctx in enumerate(batch.ctx_index.tolist()):
            if ctx < n_ctx:
                n = int(batch.attention_mask[row].sum())
                want[ctx, :n] = batch.input_ids[row, :n].numpy()
                assert docs[ctx] == batch.docs[row].model_dump_json()
        if batch.ctx_index[-1] >= n_ctx - 1:
            break
    np.testing.assert_array_equal(ids, want)
    # the held-out cache already complete (a harvest resumed after it): the ids are read again, the same
    rd.contexts.unlink()
    rd.docs.unlink()
    run_harvest(cfg, rd, show=False)
    np.testing.assert_array_equal(np.load(rd.contexts), want)
    assert rd.docs.read_text().splitlines() == docs
