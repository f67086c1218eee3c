"""delphi-style example sampling on a synthetic cache with known activations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from latentdiff.config import SamplingConfig
from latentdiff.core.cache import Manifest, ShardWriter
from latentdiff.core.crosscoder import CrossCoder, CrossCoderSpec
from latentdiff.core.examples import build_examples, read_examples, write_examples


class _Tok:
    def decode(self, ids: list[int]) -> str:
        return f"t{ids[0]} "


def _setup(tmp_path: Path) -> tuple[CrossCoder, Path, np.ndarray, list[dict]]:
    F, D, n_ctx, T = 3, 3, 20, 16
    spec = CrossCoderSpec(arch="l1", n_models=2, d_model=D, dict_size=F)
    cc = CrossCoder(spec)
    with torch.no_grad():
        cc.W_enc.zero_()
        cc.W_enc[0] = torch.eye(D)
        cc.b_enc.zero_()
    manifest = Manifest(models=["a", "b"], layer=0, d_model=D, dtype="float32", n_contexts=n_ctx, ctx_len=T)
    writer = ShardWriter(tmp_path / "cache", manifest, shard_tokens=50)
    for c in range(n_ctx):
        acts = torch.zeros(T, 2, D)
        acts[:, 0, 1] = 0.5  # latent 1 fires everywhere (weakly)
        if c % 2 == 0:  # latent 0 fires on even contexts, peak c at position 3
            acts[3, 0, 0] = float(c + 1)
            acts[4, 0, 0] = 0.1
        # latent 2 never fires
        writer.add(acts, torch.full((T,), c), torch.arange(T), ctx_end=c + 1)
    writer.flush(n_ctx)
    contexts = np.arange(n_ctx * T, dtype=np.int32).reshape(n_ctx, T)
    docs = [{"doc_id": c // 2, "category": "neutral"} for c in range(n_ctx)]
    return cc, tmp_path / "cache", contexts, docs


def test_top_quantile_negative_examples(tmp_path: Path) -> None:
    cc, cache, contexts, docs = _setup(tmp_path)
    cfg = SamplingConfig(window=8, n_top=3, n_quantiles=2, n_per_quantile=1, n_negative=4)
    examples = list(build_examples(cc, cache, [0, 2], contexts, docs, _Tok(), cfg, seed=1))
    top = [e for e in examples if e.latent == 0 and e.kind == "top"]
    assert [e.ctx for e in top] == [18, 16, 14]  # highest peaks first
    assert top[0].max_act == 19.0 and top[0].activations[3] == 19.0 and top[0].activations[4] == 0.1
    assert top[0].start == 0 and top[0].tokens[0] == f"t{18 * 16} "
    assert "<<t291 >>" in top[0].marked_text()  # token at position 3 marked
    quant = [e for e in examples if e.latent == 0 and e.kind == "quantile"]
    assert sorted(e.quantile for e in quant) == [0, 1]
    low = next(e for e in quant if e.quantile == 0)
    high = next(e for e in quant if e.quantile == 1)
    assert low.max_act <= high.max_act
    neg = [e for e in examples if e.latent == 0 and e.kind == "negative"]
    assert len(neg) == 4 and all(e.max_act == 0 for e in neg)
    assert not [e for e in examples if e.latent == 2 and e.kind != "negative"]  # dead latent
    assert top[0].doc_id == 9 and top[0].category == "neutral"
    n = write_examples(iter(examples), tmp_path / "ex.jsonl.gz")
    assert n == len(examples) and list(read_examples(tmp_path / "ex.jsonl.gz")) == examples


def test_byte_level_pieces_decode_to_whole_characters() -> None:
    """Cyrillic, CJK and emoji split over byte-level tokens: decoded per token they were U+FFFD pairs."""
    from transformers import AutoTokenizer

    from latentdiff.core.examples import decode_pieces
    from latentdiff.core.organisms import resolve_model_path

    tok = AutoTokenizer.from_pretrained(resolve_model_path("organism:base"))
    for text in ["Привет, как дела? Это тест.", "日本語のテキストです 🙂 ok", "plain english text"]:
        ids = tok.encode(text, add_special_tokens=False)
        pieces = decode_pieces(tok, ids)
        assert len(pieces) == len(ids) and "".join(pieces) == text and "\ufffd" not in "".join(pieces)
    ids = tok.encode("Привет", add_special_tokens=False)
    assert any("\ufffd" in tok.decode([i]) for i in ids)  # the case the function exists for
    cut = decode_pieces(tok, ids[1:])  # a window that starts inside a character keeps one marker, not garbage
    assert len(cut) == len(ids) - 1 and "".join(cut).count("\ufffd") <= 1
