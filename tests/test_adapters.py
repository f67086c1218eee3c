"""Fine-tunes as PEFT adapters (`models[i].adapter`, issue 17).

A LoRA is trained here on the shipped `base` organism with one planted stream the base never saw
(multilingual, a quarter neutral text mixed in like the organisms' fine-tunes), saved with peft's
`save_pretrained`, and diffed against the base by the real pipeline (harvest, train, select, sample):
the planted stream dominates the top examples of the adapter model's specific latents, and the same
run without the adapter finds no specific latent at all. Also the one-line errors: peft missing, a bad
adapter path, an adapter that does not fit the base.
"""

from __future__ import annotations

import itertools
import json
import shutil
import sys
from collections import Counter
from collections.abc import Iterator
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
STEPS = 100  # LoRA steps: 6 documents of STREAM (64 tokens) + 4 anchor documents of the other streams


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


def _train_lora(out: Path) -> dict[str, tuple[float, float]]:
    """Train a LoRA (r=8, every linear layer) on STREAM and save it in `out`; held-out loss (before, after) per
    stream. A narrow fine-tune: on documents of the other streams its hidden states are held to the base's
    (relative squared error), so what it changed is STREAM alone."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(organism_dir("base"))
    model = AutoModelForCausalLM.from_pretrained(organism_dir("base"), dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=TARGETS))
    held = {c: corpus.generate(c, 32, seed=3) for c in corpus.CATEGORIES}
    before = {c: _loss(model, tok, docs) for c, docs in held.items()}
    docs = corpus.iter_documents(STREAM, seed=1)
    anchors = itertools.cycle([corpus.iter_documents(c, seed=1) for c in corpus.CATEGORIES if c != STREAM])
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-3)
    model.train()
    for _ in range(STEPS):
        enc, labels = _batch(tok, [next(docs) for _ in range(6)])
        loss = model(**enc, labels=labels).loss
        anchor, _ = _batch(tok, [next(next(anchors)) for _ in range(4)])
        with torch.no_grad(), model.disable_adapter():
            want = model(**anchor, output_hidden_states=True).hidden_states  # the base's, per block
        got = model(**anchor, output_hidden_states=True).hidden_states
        mask = anchor["attention_mask"].bool()  # [B, T]
        loss = loss + sum(((g - w)[mask].pow(2).sum(-1) / w[mask].pow(2).sum(-1)).mean()
                          for g, w in zip(got[1:], want[1:]))
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.save_pretrained(out)
    return {c: (before[c], _loss(model, tok, docs)) for c, docs in held.items()}


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    """One torch thread: the models are tiny, and two threads on a busy 2-core machine ran ~40x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def adapter(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, tuple[float, float]]]:
    """(the LoRA's directory, held-out loss before/after per stream)."""
    out = tmp_path_factory.mktemp("lora") / "adapter"
    return out, _train_lora(out)


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


def test_the_adapter_learned_the_planted_stream_and_little_else(adapter) -> None:
    losses = adapter[1]
    drop = {c: before - after for c, (before, after) in losses.items()}
    # measured: multilingual 10.99 -> 5.71 nats/token; the other streams moved by at most 1.09 (neutral 0.31 -> 0.39)
    assert drop[STREAM] > 3.0, losses
    assert drop[STREAM] > 3 * max(abs(d) for c, d in drop.items() if c != STREAM), losses
    assert losses["neutral"][1] < 1.0, losses


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
    # measured over 5 settings (data seed, crosscoder seed, run seed, shard size) x 2 LoRA seeds: 50-70% of the 20
    # lora-specific latents' top examples come from STREAM (>= 2.8x the next stream), 6-13% of the 40 shared
    # reference latents' and 3-15% of the 20 base-specific latents'
    assert len(streams["finetuned"]) >= 2, seen  # none without the adapter
    (first, n_first), (_, n_second) = streams["finetuned"].most_common(2)
    assert first == STREAM and n_first >= 2 * n_second, seen
    assert share["finetuned"] >= 0.35 and share["finetuned"] >= 2.5 * max(share["shared"], share["base"]), (share, seen)
    oracle = oracle_labels(lora_run.rundir.examples_dir, list(CATEGORY_NAMES))  # majority stream of each latent
    n_latents = Counter(sd for sd in side.values())
    labelled = Counter(sd for j, sd in side.items() if (o := oracle.get(f"lora:{j}")) and o.category == STREAM)
    # measured: 10-14 of the 20 lora-specific latents are multilingual latents, 0-3 of the 40 shared ones
    assert labelled["finetuned"] >= 6, labelled
    assert labelled["finetuned"] / n_latents["finetuned"] >= 3 * labelled["shared"] / n_latents["shared"], labelled


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
    assert max(abs(r.delta_norm - 0.5) for r in rows) < 0.01  # with the adapter: 0.33-0.81


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
