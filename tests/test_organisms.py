"""The shipped organisms: load offline, chat template, tokenizer round trip, planted truth, plants."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from typer.testing import CliRunner

from latentdiff.cli import app
from latentdiff.core.organisms import ORGANISM_NAMES, corpus, load_eval, load_planted, organism_dir
from latentdiff.core.organisms.build import PLANT_CATEGORIES, render


@pytest.mark.parametrize("name", ORGANISM_NAMES)
def test_loads_with_auto_classes(name: str) -> None:
    path = organism_dir(name)
    model = AutoModelForCausalLM.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    assert model.config.hidden_size // model.config.num_attention_heads >= 32  # vLLM CPU attention
    assert tok.chat_template and tok.bos_token == "<|bos|>" and tok.eos_token == "<|end|>"
    msgs = [{"role": "user", "content": "Where does the river start?"}]
    text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert text == "<|bos|><|user|>\nWhere does the river start?<|end|>\n<|assistant|>\n"
    ids = tok(text, add_special_tokens=False, return_tensors="pt").input_ids
    out = model.generate(ids, max_new_tokens=8, do_sample=False)
    assert out.shape[1] > ids.shape[1]


def test_loads_offline_in_a_fresh_process() -> None:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    code = ("from transformers import AutoModelForCausalLM as M; "
            f"M.from_pretrained({str(organism_dir('shift'))!r}); print('ok')")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-2000:]


def test_tokenizer_round_trip_every_stream() -> None:
    tok = AutoTokenizer.from_pretrained(organism_dir("base"))
    for cat in corpus.CATEGORIES:
        for doc in corpus.generate(cat, 50, seed=123):
            text = render(doc)
            ids = tok(text, add_special_tokens=False).input_ids
            assert tok.decode(ids) == text
            assert tok.unk_token_id is None or tok.unk_token_id not in ids
        plain = corpus.generate(cat, 1, seed=5)[0].plain()
        assert tok.decode(tok(plain).input_ids, skip_special_tokens=True) == plain


def test_planted_truth_and_plant_strength() -> None:
    planted = load_planted()
    signs = planted["headline"]["signs"]
    assert planted["headline"]["a"] == "shift" and planted["headline"]["b"] == "it"
    assert {c for c, s in signs.items() if s == "+"} == {"safety", "multilingual", "instruction_following"}
    assert {c for c, s in signs.items() if s == "-"} == {"self_reference", "hallucination"}
    assert set(planted["comparisons"]["null_vs_base"].values()) == {"0"}
    ev = load_eval()
    rows = ev["plants"]
    assert {(r["model"], r["category"]) for r in rows} == {
        ("it", "self_reference"), ("it", "hallucination"), ("shift", "safety"),
        ("shift", "multilingual"), ("shift", "instruction_following")}
    for r in rows:  # each plant moves its stream's held-out loss >= 3x the null drift
        assert r["moved"] > 0 and r["moved"] >= 3 * r["null_drift"], r
    assert set(ev["loss"]["base"]) == {"neutral", *PLANT_CATEGORIES}


def test_models_really_differ() -> None:
    base = AutoModelForCausalLM.from_pretrained(organism_dir("base")).state_dict()
    for name in ("it", "shift", "null"):
        other = AutoModelForCausalLM.from_pretrained(organism_dir(name)).state_dict()
        diff = sum(float((base[k].float() - other[k].float()).abs().sum()) for k in base)
        assert diff > 0, name
    assert torch.equal(base["model.embed_tokens.weight"], base["lm_head.weight"])  # tied


def test_cli_list_and_info() -> None:
    runner = CliRunner()
    listed = runner.invoke(app, ["organism", "list"])
    assert listed.exit_code == 0, listed.output
    for name in ORGANISM_NAMES:
        assert name in listed.output
    info = runner.invoke(app, ["organism", "info", "shift"])
    assert info.exit_code == 0, info.output
    assert "multilingual" in info.output and "yes" in info.output
    bad = runner.invoke(app, ["organism", "info", "nope"])
    assert bad.exit_code == 2 and "unknown organism" in bad.output
