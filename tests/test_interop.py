"""Issue 17 wiring, end to end through the CLI: a run's crosscoder exported in dictionary_learning's layout,
loaded back by another run with `crosscoder.init_from` (training skipped, the same latents selected), and a
labelled run exported for Neuronpedia."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import small_run_config


def _cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "latentdiff.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_exported_crosscoder_starts_another_run(core_run, tmp_path: Path) -> None:
    import yaml

    from latentdiff.core.select import read_table

    out = tmp_path / "dl"
    proc = _cli("export", "crosscoder", str(core_run.dir), str(out), "--format", "dictionary_learning")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (out / "model.safetensors").is_file() and "code_normalization" in (out / "config.json").read_text()

    dest = tmp_path / "from-dl"
    shutil.copytree(core_run.dir, dest)
    cfg = small_run_config(dest, crosscoder={**small_run_config(dest).crosscoder.model_dump(),
                                              "init_from": str(out)})
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json", exclude_none=True)))
    proc = _cli("train", str(tmp_path / "run.yaml"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "training skipped" in proc.stderr
    proc = _cli("select", str(tmp_path / "run.yaml"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not (dest / "crosscoders" / "joint" / "metrics.jsonl").exists()  # nothing was trained
    from latentdiff.run import Run

    assert Run.open(dest).train().crosscoders  # the results API reads a run whose crosscoder was imported
    old = {(r.pair, r.latent): r for r in read_table(core_run.dir / "latents.parquet")}
    new = {(r.pair, r.latent): r for r in read_table(dest / "latents.parquet")}
    assert old.keys() == new.keys()
    assert max(abs(old[k].delta_norm - new[k].delta_norm) for k in old) < 1e-5
    assert {k for k, r in old.items() if r.side == "finetuned"} == {k for k, r in new.items() if r.side == "finetuned"}


def test_bad_init_from_is_one_line(core_run, tmp_path: Path) -> None:
    import yaml

    dest = tmp_path / "bad"
    shutil.copytree(core_run.dir, dest)
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "config.json").write_text("{}")
    cfg = small_run_config(dest, crosscoder={**small_run_config(dest).crosscoder.model_dump(), "init_from": str(junk)})
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json", exclude_none=True)))
    proc = _cli("train", str(tmp_path / "run.yaml"))
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert str(junk) in proc.stderr.strip().splitlines()[-1]


def test_neuronpedia_export_of_a_labelled_run(reported_run, tmp_path: Path) -> None:
    proc = _cli("export", "neuronpedia", str(reported_run.dir), str(tmp_path / "np"), "--model-id", "organism-it",
                "--creator-id", "user-1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    roots = list((tmp_path / "np" / "organism-it").iterdir())
    assert len(roots) == 1 and roots[0].name.endswith("-latentdiff-joint")
    for part in ("features", "activations", "explanations"):
        files = sorted((roots[0] / part).glob("batch-*.jsonl.gz"))
        assert files, part
        rows = [json.loads(x) for x in gzip.decompress(files[0].read_bytes()).decode().splitlines()]
        assert rows and all(set(r) == set(rows[0]) for r in rows)  # the importer takes columns from line 1
