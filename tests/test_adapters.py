"""Fine-tunes as PEFT adapters (`models[i].adapter`, issue 17).

A LoRA is trained here on the shipped `base` organism with one planted stream the base never saw
(multilingual, a quarter neutral text mixed in like the organisms' fine-tunes), saved with peft's
`save_pretrained`, and diffed against the base by the real pipeline (harvest, train, select, sample):
the planted stream dominates the top examples of the adapter model's specific latents, and the same
run without the adapter finds no specific latent at all. Also the one-line errors: peft missing, a bad
adapter path, an adapter that does not fit the base.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch

from latentdiff.config import CATEGORY_NAMES, ModelSpec, build_config
from latentdiff.core.models import check_compatible, find_layers, forward_to_layer, load_model
from latentdiff.core.organisms import corpus, organism_dir
from latentdiff.errors import ConfigError, ModelLoadError
from latentdiff.run import Run

STREAM = "multilingual"  # the planted stream: the base never saw it (core/organisms/build.py)
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
STEPS = 100  # LoRA steps of 8 documents (6 of STREAM, 2 neutral), 64 tokens each


def _batch(tok: Any, docs: list[corpus.Document]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    from latentdiff.core.organisms.build import render

    enc = tok([render(d) for d in docs], add_special_tokens=False, padding=True, truncation=True, max_length=64,
              return_tensors="pt")
    return enc, enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)  # no loss on padding


@torch.no_grad()
def _loss(model: Any, tok: Any, docs: list[corpus.Document]) -> float:
    model.eval()
    enc, labels = _batch(tok, docs)
    return float(model(**enc, labels=labels).loss)


@pytest.fixture(scope="module")
def adapter(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, tuple[float, float]]]:
    """A LoRA (r=8, every linear layer) trained on STREAM; (its directory, held-out loss before/after per stream)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(organism_dir("base"))
    model = AutoModelForCausalLM.from_pretrained(organism_dir("base"), dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=TARGETS))
    held = {c: corpus.generate(c, 32, seed=3) for c in (STREAM, "neutral")}
    before = {c: _loss(model, tok, docs) for c, docs in held.items()}
    docs, neutral = corpus.iter_documents(STREAM, seed=1), corpus.iter_documents("neutral", seed=1)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-3)
    model.train()
    for _ in range(STEPS):
        enc, labels = _batch(tok, [next(docs) for _ in range(6)] + [next(neutral) for _ in range(2)])
        model(**enc, labels=labels).loss.backward()
        opt.step()
        opt.zero_grad()
    losses = {c: (before[c], _loss(model, tok, docs)) for c, docs in held.items()}
    out = tmp_path_factory.mktemp("lora") / "adapter"
    model.save_pretrained(out)
    return out, losses


def _config(run_dir: Path, adapter: Path | None, **over: Any):
    lora: dict[str, Any] = {"name": "lora", "path": "organism:base", "role": "finetune"}
    if adapter is not None:
        lora["adapter"] = str(adapter)
    data = {
        "name": "lora",
        "run_dir": str(run_dir),
        "models": [{"name": "base", "path": "organism:base", "role": "base"}, lora],
        "data": {"n_tokens": 20_000, "n_heldout_tokens": 8_000, "ctx_len": 64},
        # the last block: the adapter's changes add up over the blocks (the middle one gives the same
        # picture, weaker: 26% vs 9% of top examples)
        "harvest": {"layer": 3, "batch_size": 16, "shard_tokens": 4_000},
        "crosscoder": {"dict_size": 256, "k": 8, "batch_size": 256, "steps": 300, "warmup_steps": 5,
                       "checkpoint_every": 1_000, "dead_tokens": 5_000},
        "selection": {"method": "rank", "top_n": 20, "reference_n": 40},
        "sampling": {"n_top": 10, "n_quantiles": 2, "n_per_quantile": 1, "n_negative": 2},
    }
    return build_config(data | over)


@pytest.fixture(scope="module")
def lora_run(adapter, tmp_path_factory: pytest.TempPathFactory) -> Run:
    run = Run(_config(tmp_path_factory.mktemp("lora_run") / "run", adapter[0]))
    run.show_progress = False
    for stage in ("harvest", "train", "select", "sample"):
        run.stage(stage)
    return run


def test_the_adapter_learned_the_planted_stream(adapter) -> None:
    (before, after), (neutral_before, neutral_after) = adapter[1][STREAM], adapter[1]["neutral"]
    # measured: multilingual 10.99 -> 5.76 nats/token, neutral 0.30 -> 0.43
    assert after < before - 3.0, f"{before=:.2f} {after=:.2f}"
    assert neutral_after < 1.0, f"{neutral_before=:.2f} {neutral_after=:.2f}"


def test_the_planted_stream_comes_back_among_the_adapter_models_specific_latents(lora_run) -> None:
    from latentdiff.agent.oracle import oracle_labels
    from latentdiff.core.examples import read_examples

    side = {r.latent: r.side for r in lora_run.latent_stats(pair="lora")}
    streams: dict[str, Counter[str]] = {"finetuned": Counter(), "base": Counter(), "shared": Counter()}
    for ex in read_examples(lora_run.rundir.examples("lora")):
        if ex.kind == "top" and ex.category:
            streams[side[ex.latent]][ex.category] += 1
    share = {s: c[STREAM] / max(1, c.total()) for s, c in streams.items()}
    seen = {s: dict(c) for s, c in streams.items()}
    # measured (4 seeds of crosscoder / data / run): 34-38% of the 20 lora-specific latents' top examples come
    # from the planted stream (the most common stream there), 5-6% of the 40 shared reference latents'
    assert streams["finetuned"].most_common(1)[0][0] == STREAM, seen
    assert share["finetuned"] >= 0.25 and share["finetuned"] >= 3 * share["shared"], (share, seen)
    oracle = oracle_labels(lora_run.rundir.examples_dir, list(CATEGORY_NAMES))  # majority stream per latent
    labels = {s: Counter(oracle[f"lora:{j}"].category for j, sd in side.items() if sd == s and f"lora:{j}" in oracle)
              for s in ("finetuned", "shared")}
    # measured: 7-9 of the 20 lora-specific latents are multilingual latents, 0-3 of the 40 shared ones
    assert labels["finetuned"][STREAM] >= 5 and labels["finetuned"][STREAM] / 20 > 2 * labels["shared"][STREAM] / 40, (
        labels)


def test_without_the_adapter_the_model_is_the_base_and_nothing_is_specific(tmp_path: Path) -> None:
    small = {"data": {"n_tokens": 4_000, "n_heldout_tokens": 2_000, "ctx_len": 64},
             "crosscoder": {"dict_size": 64, "k": 4, "batch_size": 256, "steps": 30, "warmup_steps": 2,
                            "checkpoint_every": 1_000, "dead_tokens": 5_000}}
    run = Run(_config(tmp_path / "run", None, **small))
    run.show_progress = False
    for stage in ("harvest", "train", "select"):
        run.stage(stage)
    rows = run.latent_stats(pair="lora")
    assert "finetuned" not in run.select().sides["lora"]
    assert max(abs(r.delta_norm - 0.5) for r in rows) < 0.01  # the lora run: Delta-norm 0.14-0.84


def test_merged_and_unmerged_adapters_give_the_same_activations(adapter) -> None:
    base = load_model(ModelSpec(name="base", path="organism:base", role="base"), "cpu")
    merged = load_model(ModelSpec(name="lora", path="organism:base", role="finetune", adapter=str(adapter[0])), "cpu")
    unmerged = load_model(ModelSpec(name="raw", path="organism:base", role="finetune", adapter=str(adapter[0]),
                                    merge_adapter=False), "cpu")
    assert type(merged.model) is type(base.model) and type(unmerged.model) is type(base.model)  # plain HF models
    assert not any("lora" in n for n, _ in merged.model.named_modules())
    assert any("lora" in n for n, _ in find_layers(unmerged.model).named_modules())  # LoRA layers in the blocks
    assert check_compatible([base, merged, unmerged], 3) == 3
    enc = base.tokenizer([corpus.generate(STREAM, 1, seed=9)[0].plain()], return_tensors="pt")
    acts = [forward_to_layer(m, enc["input_ids"], enc["attention_mask"], 3) for m in (base, merged, unmerged)]
    assert torch.allclose(acts[1], acts[2], atol=1e-4, rtol=1e-4)
    assert (acts[1] - acts[0]).norm() > 0.1 * acts[0].norm()  # the adapter was applied


def test_the_tokenizer_comes_from_the_adapter_directory_when_it_holds_one(adapter, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    own = tmp_path / "adapter"
    shutil.copytree(adapter[0], own)
    tok = AutoTokenizer.from_pretrained(organism_dir("base"))
    tok.chat_template = "{{ 'adapter template' }}"
    tok.save_pretrained(own)
    m = load_model(ModelSpec(name="lora", path="organism:base", role="finetune", adapter=str(own)), "cpu")
    assert m.tokenizer.chat_template == "{{ 'adapter template' }}"
    plain = load_model(ModelSpec(name="lora", path="organism:base", role="finetune", adapter=str(adapter[0])), "cpu")
    assert plain.tokenizer.chat_template == AutoTokenizer.from_pretrained(organism_dir("base")).chat_template


# --------------------------------------------------------------------------- one-line errors


def _spec(adapter: str) -> ModelSpec:
    return ModelSpec(name="lora", path="organism:base", role="finetune", adapter=adapter)


def test_peft_missing_is_one_line_naming_the_extra(adapter, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "peft", None)  # `import peft` raises ImportError
    with pytest.raises(ModelLoadError) as info:
        load_model(_spec(str(adapter[0])), "cpu")
    assert str(info.value) == "models.lora.adapter needs peft: pip install 'latentdiff[peft]'"


def test_a_bad_adapter_path_is_one_line(tmp_path: Path) -> None:
    models = [{"name": "base", "path": "organism:base", "role": "base"},
              {"name": "lora", "path": "organism:base", "role": "finetune", "adapter": str(tmp_path / "missing")}]
    with pytest.raises(ConfigError, match=r"^models\.1\.adapter: no such directory, and not a hub id") as info:
        build_config({"models": models})
    assert "\n" not in str(info.value)
    models[1]["adapter"] = "someone/some-lora"  # a hub id: checked when the model loads
    assert build_config({"models": models}).models[1].adapter == "someone/some-lora"
    with pytest.raises(ConfigError, match=r"adapter_revision is set but adapter is not"):
        build_config({"models": [models[0], {**models[1], "adapter": None, "adapter_revision": "v1"}]})
    (tmp_path / "empty").mkdir()  # a directory without adapter_config.json
    with pytest.raises(ModelLoadError, match=r"^models\.lora\.adapter: cannot apply .*adapter_config\.json") as info:
        load_model(_spec(str(tmp_path / "empty")), "cpu")
    assert "\n" not in str(info.value)


def test_an_adapter_that_does_not_fit_the_base_is_one_line(adapter, tmp_path: Path) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    # trained for a narrower architecture (d_model 128, the organisms' is 256): every LoRA matrix has the wrong shape
    narrow = LlamaForCausalLM(LlamaConfig(vocab_size=4096, hidden_size=128, intermediate_size=256, num_hidden_layers=4,
                                          num_attention_heads=2, num_key_value_heads=2))
    get_peft_model(narrow, LoraConfig(r=4, target_modules=["q_proj", "v_proj"])).save_pretrained(tmp_path / "narrow")
    with pytest.raises(ModelLoadError, match=r"^models\.lora\.adapter: cannot apply .*: size mismatch for ") as info:
        load_model(_spec(str(tmp_path / "narrow")), "cpu")
    assert "\n" not in str(info.value)
    # an adapter_config.json naming modules the base does not have
    odd = tmp_path / "odd"
    shutil.copytree(adapter[0], odd)
    cfg = json.loads((odd / "adapter_config.json").read_text())
    (odd / "adapter_config.json").write_text(json.dumps({**cfg, "target_modules": ["c_attn"]}))
    with pytest.raises(ModelLoadError, match=r"^models\.lora\.adapter: cannot apply .*c_attn.* not found") as info:
        load_model(_spec(str(odd)), "cpu")
    assert "\n" not in str(info.value)
