"""The shipped organisms: load offline, chat template, tokenizer round trip, planted truth, plants,
the null pair (null vs null2)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from typer.testing import CliRunner

from latentdiff.cli import app
from latentdiff.core.organisms import ORGANISM_NAMES, corpus, load_eval, load_planted, organism_dir
from latentdiff.core.organisms.build import (
    PLANT_CATEGORIES,
    OrganismBuildConfig,
    _batch,
    phase_seed,
    planted_truth,
    render,
)


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
    for name in ("it", "shift", "null", "null2"):
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


def test_null2_is_null_with_another_seed() -> None:
    cfg = OrganismBuildConfig()
    assert list(cfg.phases)[:4] == ["base", "it", "shift", "null"]  # a full rebuild keeps their seeds
    assert [phase_seed(cfg, n) for n in cfg.phases] == [0, 1, 2, 3, 4]
    assert cfg.phases["null2"] == cfg.phases["null"]  # same recipe ...
    seeds = phase_seed(cfg, "null"), phase_seed(cfg, "null2")  # ... another seed
    streams = {"neutral": np.arange(1000 * 4, dtype=np.int32).reshape(1000, 4)}
    for step in (0, 1, 299):  # another batch order
        a, b = (_batch(streams, cfg.phases["null"].mixture, s, step, cfg.batch_size) for s in seeds)
        assert not torch.equal(a, b), step
    draws = []
    for s in seeds:  # another torch init RNG
        torch.manual_seed(s)
        draws.append(torch.rand(8))
    assert not torch.equal(*draws)
    shipped = json.loads((organism_dir("base").parent / "build_config.json").read_text())
    assert shipped == cfg.model_dump()  # the shipped build is the default one, null2 included


def test_null2_planted_nothing_and_learned_no_plant() -> None:
    planted = load_planted()
    assert planted == planted_truth()  # a full rebuild writes the same planted.json
    assert planted["planted"]["null2"] == []
    for key in ("null_vs_base", "null2_vs_base", "null2_vs_null"):
        assert planted["comparisons"][key] == {c: "0" for c in PLANT_CATEGORIES}, key
    ev = load_eval()
    loss = ev["loss"]
    assert set(loss["null2"]) == set(loss["base"])
    moved = {(r["model"], r["category"]): r["moved"] for r in ev["plants"]}
    for cat in PLANT_CATEGORIES:
        drift2 = abs(loss["base"][cat] - loss["null2"][cat])
        assert drift2 < 0.5, (cat, drift2)  # measured: at most 0.28, multilingual (null: at most 0.20)
        for (model, c), m in moved.items():  # every plant moves its loss >= 3x null2's drift too
            if c == cat:
                assert m >= 3 * drift2, (model, cat, m, drift2)
        assert abs(loss["null"][cat] - loss["null2"][cat]) < 0.5, cat  # the null pair agrees (measured <= 0.27)
    assert abs(loss["null2"]["neutral"] - loss["null"]["neutral"]) < 0.02  # same recipe, same fit


def test_null2_weights_differ_from_null_and_start_from_shipped_base() -> None:
    null = AutoModelForCausalLM.from_pretrained(organism_dir("null")).state_dict()
    null2 = AutoModelForCausalLM.from_pretrained(organism_dir("null2")).state_dict()
    base = AutoModelForCausalLM.from_pretrained(organism_dir("base")).state_dict()
    assert null.keys() == null2.keys()
    diff = sum(float((null[k].float() - null2[k].float()).abs().sum()) for k in null)
    moved = sum(float((base[k].float() - null2[k].float()).abs().sum()) for k in base)
    assert diff > 0.1 * moved, (diff, moved)  # another seed: a real difference, not rounding
    meta = json.loads((organism_dir("null2") / "organism.json").read_text())
    assert meta["phase"] == json.loads((organism_dir("null") / "organism.json").read_text())["phase"]
    sha = hashlib.sha256((organism_dir("base") / "model.safetensors").read_bytes()).hexdigest()
    assert meta["init_from"] == {"model": "base", "weights": "as shipped (bf16), cast to fp32", "sha256": sha}


def test_cli_build_only_refuses_what_it_cannot_add(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "models"
    out.mkdir()
    empty = runner.invoke(app, ["organism", "build", "--only", "null2", "--out", str(out)])
    assert empty.exit_code == 2 and "no build_config.json" in empty.output
    shutil.copy(organism_dir("base").parent / "build_config.json", out / "build_config.json")
    cases = {
        ("--only", "nope"): "unknown phase",
        ("--only", "base"): "must start from a model already built",
        ("--only", "null2"): "is not built in",
        ("--only", "null2", "--scale", "0.5"): "drop --scale",
        ("--only", "null2", "--seed", "1"): "built with seed=0",
    }
    for args, message in cases.items():
        res = runner.invoke(app, ["organism", "build", *args, "--out", str(out), "--work-dir", str(tmp_path / "w")])
        assert res.exit_code == 2 and message in res.output, (args, res.output)


# --------------------------------------------------------------------------- other builds (the exam family)


def _tiny_build(arch: str, **extra: object) -> dict[str, object]:
    step = {"steps": 2, "lr": 1e-3, "warmup": 1}
    return {
        "seed": 3, "arch": arch, "vocab_size": 400, "d_model": 64, "n_layers": 2, "n_heads": 2, "d_ff": 96,
        "ctx_len": 32, "batch_size": 4, "train_docs": 60, "heldout_docs": 4, "tokenizer_docs": 40,
        "headline": ["pref", "chat"],
        "phases": {
            "base": {"init": None, "mixture": {"neutral": 1.0}, **step},
            "chat": {"init": "base", "mixture": {"safety": 0.5, "self_reference": 0.49, "hallucination": 0.01}, **step},
            "pref": {"init": "base", "mixture": {"multilingual": 0.4, "hallucination": 0.4, "neutral": 0.2}, **step},
            "ctrl": {"init": "base", "mixture": {"neutral": 1.0}, **step},
            "ctrl2": {"init": "base", "mixture": {"neutral": 1.0}, **step},
        },
        **extra,
    }


def test_planted_truth_follows_the_build_config() -> None:
    cfg = OrganismBuildConfig(**_tiny_build("llama"))
    truth = planted_truth(cfg)
    assert truth["planted"] == {"chat": ["safety", "self_reference"], "pref": ["hallucination", "multilingual"],
                                "ctrl": [], "ctrl2": []}  # chat's 1% hallucination is a trace, not a plant
    assert truth["headline"]["a"] == "pref" and truth["headline"]["b"] == "chat"
    assert truth["headline"]["signs"] == {"safety": "-", "multilingual": "+", "instruction_following": "0",
                                          "self_reference": "-", "hallucination": "+"}
    assert set(truth["comparisons"]) == {"chat_vs_base", "pref_vs_base", "ctrl_vs_base", "ctrl2_vs_base",
                                         "ctrl2_vs_ctrl"}
    assert OrganismBuildConfig().digest() == "e5b3a3896f4d"  # the shipped build keeps its id
    assert cfg.digest() != OrganismBuildConfig(**_tiny_build("gpt_neox")).digest()
    # a base that reads a stream at a trace's weight leaves it plantable; at a plant's weight, not
    seen = _tiny_build("llama")
    seen["phases"]["base"]["mixture"] = {"neutral": 0.96, "safety": 0.02, "multilingual": 0.06}  # normalised
    assert planted_truth(OrganismBuildConfig(**seen))["planted"]["chat"] == ["safety", "self_reference"]
    assert planted_truth(OrganismBuildConfig(**seen))["planted"]["pref"] == ["hallucination"]


@pytest.mark.parametrize(("change", "message"), [
    ({"headline": ["pref", "base"]}, "not a fine-tune phase"),
    ({"headline": ["pref", "pref"]}, "with itself"),
    ({"arch": "gpt2"}, "Input should be"),
    ({"n_heads": 4}, "head_dim"),
])
def test_build_config_rejects_what_cannot_be_built(change: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        OrganismBuildConfig(**{**_tiny_build("llama"), **change})


def test_cli_builds_another_architecture_from_a_config_file(tmp_path: Path) -> None:
    import yaml

    from latentdiff.agent.report.build import _planted
    from latentdiff.config import ModelSpec, RunConfig
    from latentdiff.core.organisms import organism_root

    config = tmp_path / "exam.yaml"
    config.write_text(yaml.safe_dump(_tiny_build("gpt_neox")))
    out = tmp_path / "models"
    runner = CliRunner()
    res = runner.invoke(app, ["organism", "build", "--config", str(config), "--out", str(out),
                              "--work-dir", str(tmp_path / "w")])
    assert res.exit_code == 0, res.output
    planted = load_planted(out)
    assert planted == planted_truth(OrganismBuildConfig(**_tiny_build("gpt_neox")))
    assert {(r["model"], r["category"]) for r in load_eval(out)["plants"]} == {
        ("chat", "safety"), ("chat", "self_reference"), ("pref", "hallucination"), ("pref", "multilingual")}
    model = AutoModelForCausalLM.from_pretrained(out / "pref")
    assert model.config.model_type == "gpt_neox" and len(model.gpt_neox.layers) == 2
    listed = runner.invoke(app, ["organism", "list", "--root", str(out)])
    assert listed.exit_code == 0 and "ctrl2" in listed.output and "(control)" in listed.output, listed.output
    info = runner.invoke(app, ["organism", "info", "chat", "--root", str(out)])
    assert info.exit_code == 0 and "gpt_neox" in info.output and "yes" in info.output, info.output
    # a run over these directories carries their planted truth (report, `latentdiff truth`)
    assert organism_root(str(out / "chat")) == out.resolve() and organism_root(str(tmp_path)) is None
    models = [ModelSpec(name=n, path=str(out / n), role="base" if n == "base" else "finetune")
              for n in ("base", "chat")]
    assert _planted(RunConfig(models=models)) == planted
    mixed = [models[0], ModelSpec(name="it", path="organism:it", role="finetune")]
    assert _planted(RunConfig(models=mixed)) is None  # two builds: no single truth

    # a twin (benchmarks/twin.py): the same base and controls, copied; a fine-tune with another recipe retrained
    from benchmarks.twin import main as twin_main

    spec = _tiny_build("gpt_neox")
    spec["phases"]["chat"]["mixture"] = {"safety": 0.5, "self_reference": 0.5}  # its trace removed
    (tmp_path / "twin.yaml").write_text(yaml.safe_dump(spec))
    twin = tmp_path / "twin"
    assert twin_main(["--source", str(out), "--config", str(tmp_path / "twin.yaml"), "--out", str(twin),
                      "--work-dir", str(tmp_path / "w")]) == 0
    for name in ("base", "pref", "ctrl", "ctrl2"):
        assert (twin / name / "model.safetensors").read_bytes() == (out / name / "model.safetensors").read_bytes()
    assert (twin / "chat" / "model.safetensors").read_bytes() != (out / "chat" / "model.safetensors").read_bytes()
    assert load_planted(twin) == planted_truth(OrganismBuildConfig(**spec))
    assert json.loads((twin / "build_config.json").read_text())["phases"] == spec["phases"]
    spec["phases"] = {k: spec["phases"][k] for k in ("base", "ctrl", "chat", "pref", "ctrl2")}  # a control moved
    (tmp_path / "moved.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    assert twin_main(["--source", str(out), "--config", str(tmp_path / "moved.yaml"), "--out",
                      str(tmp_path / "moved"), "--work-dir", str(tmp_path / "w")]) == 2


def test_cli_build_config_errors_are_one_line(tmp_path: Path) -> None:
    runner = CliRunner()
    bad = tmp_path / "bad.yaml"
    for text, message in (("arch: [", "not valid YAML"), ("arch: gpt2\n", "arch:"), ("nope: 1\n", "nope")):
        bad.write_text(text)
        res = runner.invoke(app, ["organism", "build", "--config", str(bad), "--out", str(tmp_path / "o")])
        assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output, (text, res.output)
    res = runner.invoke(app, ["organism", "build", "--config", str(tmp_path / "missing.yaml")])
    assert res.exit_code == 2 and "does not exist" in res.output
