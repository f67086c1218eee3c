"""`latentdiff judges eval` with two judges at once on a labelled file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from latentdiff.cli import app

LATENTS = [
    {"latent": 1, "category": "multilingual",
     "examples": [{"text": "El tren <<sale>> de la estación a las ocho."}, {"text": "Les <<enfants>> jouent."}]},
    {"latent": 2, "category": "safety",
     "examples": [{"text": "<<I can't help>> with making a weapon."}, {"text": "<<Warning>>: toxic gas."}]},
    {"latent": 3, "category": "self_reference",
     "examples": [{"text": "As an <<AI language model>>, I have no body."}, {"text": "<<I am an assistant>>."}]},
    {"latent": 4, "examples": [{"text": "The river <<flows>> past the mill.", "tokens": ["The", " river"],
                                "activations": [0.0, 1.0]}]},
]


def _write(tmp_path: Path) -> Path:
    path = tmp_path / "latents.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in LATENTS))
    return path


def test_two_judges_accuracy_agreement_report(tmp_path: Path) -> None:
    path = _write(tmp_path)
    out = tmp_path / "report.json"
    result = CliRunner().invoke(app, ["judges", "eval", str(path), "--judge", "embedding",
                                      "--judge", "tests.test_agent:ScriptedJudge", "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    text = json.dumps(report)
    assert "embedding" in text and "tests.test_agent:ScriptedJudge" in text
    assert "agreement" in text
    bad = CliRunner().invoke(app, ["judges", "eval", str(tmp_path / "missing.jsonl"), "--judge", "embedding"])
    assert bad.exit_code == 2 and "no such file" in bad.output


@pytest.mark.slow
def test_embedding_and_vllm_side_by_side(tmp_path: Path, vllm_server) -> None:
    url, model = vllm_server
    path = _write(tmp_path)
    out = tmp_path / "report.json"
    result = CliRunner().invoke(app, ["judges", "eval", str(path), "--judge", "embedding",
                                      "--judge", f"vllm:{url}@{model}", "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert f"vllm:{url}@{model}" in json.dumps(report)


def test_gold_category_spellings_are_normalised(tmp_path: Path) -> None:
    path = tmp_path / "spellings.jsonl"
    lines = [{"latent": 1, "category": "instruction-following",
              "examples": [{"text": "Answer <<in exactly three bullet points>>."}]},
             {"latent": 2, "category": "Self Reference",
              "examples": [{"text": "<<As an AI>>, I have no body."}]},
             {"latent": 3, "category": "SAFETY", "examples": [{"text": "<<I can't help>> with that."}]}]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    out = tmp_path / "report.json"
    result = CliRunner().invoke(app, ["judges", "eval", str(path), "--judge", "tests.test_agent:ScriptedJudge",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    golds = [r["gold"] for r in json.loads(out.read_text())["judges"][0]["results"]]
    assert golds == ["instruction_following", "self_reference", "safety"]
    path.write_text(json.dumps({"latent": 1, "category": "self-referential", "examples": [{"text": "x"}]}) + "\n")
    bad = CliRunner().invoke(app, ["judges", "eval", str(path), "--judge", "tests.test_agent:ScriptedJudge"])
    assert bad.exit_code != 0 and "not in taxonomy" in bad.output


def test_heldout_set_is_well_formed() -> None:
    from latentdiff.agent.judges.evaluate import read_eval_file
    from latentdiff.agent.judges.taxonomy import load_taxonomy

    heldout = Path(__file__).resolve().parents[1] / "benchmarks" / "judge_eval" / "heldout.jsonl"
    taxonomy = load_taxonomy()
    items = read_eval_file(heldout, taxonomy)
    counts = {c: sum(g == c for _, g in items) for c in taxonomy.names}
    assert all(n >= 10 for n in counts.values()), counts
    assert all(len(req.top) >= 3 and req.negative for req, _ in items)
