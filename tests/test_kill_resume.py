"""Kill -9 anywhere, rerun, and the final report is the same as an uninterrupted run's.

The whole pipeline runs as `python -m latentdiff.cli run CONFIG` on the shipped organisms (small
settings): once uninterrupted into A, and once into B where the process group is SIGKILLed at
points chosen from the run directory's state (a harvest shard written, a training checkpoint
written, the store being filled, some latents labelled) plus seeded random delays, then rerun
until it exits 0. B's report.json, aggregate.json, findings, latents table, examples and
crosscoder weights must equal A's.

One field is left out of the comparison: `tok_s` in the crosscoders' final training metrics
(report.json `crosscoders.NAME.tok_s`, from metrics.jsonl). It is wall-clock throughput, so it
differs between any two runs, interrupted or not.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT, small_run_config

log = logging.getLogger(__name__)

STAGES = ("harvest", "train", "select", "sample", "inspect", "index", "label", "aggregate", "report")
TIME_DEPENDENT = ("tok_s",)  # per crosscoder metric: wall-clock throughput (see the module docstring)
ATTEMPT_TIMEOUT_S = 240


def _config(run_dir: Path) -> dict[str, Any]:
    """Smaller than `small_run_config` (fewer tokens, more shards and checkpoints) to keep kills cheap."""
    cfg = small_run_config(
        run_dir,
        data={"n_tokens": 6_000, "n_heldout_tokens": 3_000, "ctx_len": 64},
        harvest={"batch_size": 16, "shard_tokens": 1_500},
        crosscoder={
            "dict_size": 256,
            "k": 8,
            "batch_size": 256,
            "steps": 30,
            "warmup_steps": 5,
            "checkpoint_every": 10,
            "dead_tokens": 5_000,
        },
        agent={"concurrency": 4},
    )
    return cfg.model_dump(mode="json")


def _write_config(tmp: Path, name: str) -> tuple[Path, Path]:
    run_dir = tmp / name
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(_config(run_dir), sort_keys=False))
    return path, run_dir


def _env() -> dict[str, str]:
    # same thread count for A and B (float reductions must not depend on it) and no progress bars
    return {
        **os.environ,
        "OMP_NUM_THREADS": "2",
        "MKL_NUM_THREADS": "2",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONUNBUFFERED": "1",
    }


def _start(config: Path, log_path: Path) -> subprocess.Popen[bytes]:
    fh = log_path.open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "latentdiff.cli", "run", str(config)],
        cwd=ROOT,
        env=_env(),
        stdout=fh,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    fh.close()
    return proc


def _stage_state(run_dir: Path) -> dict[str, str]:
    """Stage -> 'done' / 'running' / 'pending', from the markers in RUN/stages."""
    out = {}
    for s in STAGES:
        if (run_dir / "stages" / f"{s}.json").is_file():
            out[s] = "done"
        elif (run_dir / "stages" / f"{s}.started.json").is_file():
            out[s] = "running"
        else:
            out[s] = "pending"
    return out


def _running(run_dir: Path, stage: str) -> bool:
    return _stage_state(run_dir)[stage] == "running"


def _shards(run_dir: Path, split: str) -> int:
    path = run_dir / "activations" / split / "manifest.json"
    if not path.is_file():
        return 0
    manifest = json.loads(path.read_text())
    return -1 if manifest["complete"] else len(manifest["shards"])


def _metrics_step(run_dir: Path) -> int:
    """Last step in the crosscoder's metrics.jsonl (written every 10 steps, just before a checkpoint)."""
    path = run_dir / "crosscoders" / "joint" / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.is_file() else []
    try:
        return int(json.loads(lines[-1])["step"]) if lines else 0
    except json.JSONDecodeError:
        return 0


def _findings(run_dir: Path) -> int:
    return len(list((run_dir / "findings").glob("*.json"))) if (run_dir / "findings").is_dir() else 0


@dataclass
class KillPoint:
    """Kill the process group `delay` seconds after `ready(run_dir, log_text)` first holds."""

    name: str
    stages: tuple[str, ...]  # the stages the kill may land in (checked when it fires)
    ready: Callable[[Path, str], bool]
    delay: float = 0.0


def _kill_points(rng: random.Random) -> list[KillPoint]:
    return [
        KillPoint(
            "harvest: train shards written",
            ("harvest",),
            lambda d, t: _running(d, "harvest") and _shards(d, "train") >= 2,
        ),
        KillPoint(
            "harvest: held-out split",
            ("harvest",),
            lambda d, t: _running(d, "harvest") and _shards(d, "heldout") >= 1,
        ),
        # Each delayed ("random") point comes after the fixed points of its stage: if the stage ends
        # within the delay, the kill lands at the start of the next stage, whose points still fire.
        KillPoint("harvest: random", ("harvest",), lambda d, t: _running(d, "harvest"), rng.uniform(0.5, 3.0)),
        KillPoint(
            "train: checkpoint written",
            ("train",),
            lambda d, t: _running(d, "train") and (d / "crosscoders/joint/checkpoint.pt").is_file(),
        ),
        KillPoint(
            "train: around the step-20 checkpoint",
            ("train",),
            lambda d, t: _running(d, "train") and _metrics_step(d) >= 20,
            rng.uniform(0.0, 0.3),
        ),
        # select and sample take about a second each: either one (or the start of index) will do
        KillPoint("select/sample: started", ("select", "sample", "index"), lambda d, t: _running(d, "select")),
        KillPoint(
            "index: filling the store",
            ("index",),
            lambda d, t: _running(d, "index") and "loaded embedding model" in t,
            rng.uniform(0.2, 1.0),
        ),
        KillPoint("label: some latents recorded", ("label",), lambda d, t: _running(d, "label") and _findings(d) >= 2),
        KillPoint("label: random", ("label",), lambda d, t: _running(d, "label"), rng.uniform(0.0, 2.0)),
        KillPoint(
            "aggregate/report: started",
            ("aggregate", "report"),
            lambda d, t: _running(d, "aggregate") or _running(d, "report"),
        ),
    ]


def _run_with_kills(config: Path, run_dir: Path, points: list[KillPoint], log_path: Path) -> list[str]:
    """Run, killing at each point in turn, then rerun to completion; return where each kill landed."""
    landed: list[str] = []
    for point in [*points, None]:
        if point is not None and all(_stage_state(run_dir)[s] == "done" for s in point.stages):
            landed.append(f"{point.name}: skipped, its stages were done")  # an earlier kill overshot
            continue
        proc = _start(config, log_path)
        deadline = time.monotonic() + ATTEMPT_TIMEOUT_S
        fired_at: float | None = None
        while proc.poll() is None:
            assert time.monotonic() < deadline, f"attempt ({point and point.name}) ran over {ATTEMPT_TIMEOUT_S}s"
            if point is not None:
                if fired_at is None and point.ready(run_dir, log_path.read_text(errors="replace")):
                    fired_at = time.monotonic()
                # A delayed kill fires after its delay, or as soon as its stages are over (on a fast
                # machine a small stage can end within the delay): it then lands wherever the run is.
                due = fired_at is not None and (
                    time.monotonic() - fired_at >= point.delay
                    or not any(_running(run_dir, s) for s in point.stages)
                )
                if due:
                    state = _stage_state(run_dir)
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                    running = [s for s, v in state.items() if v == "running"]
                    landed.append(f"{point.name}: {running}")
                    if point.delay == 0:  # an immediate kill must land in the stage it waited for
                        assert set(running) & set(point.stages), f"kill {point.name!r} landed in {running}"
                    break
            time.sleep(0.02)
        else:
            assert point is None, f"run finished before kill point {point.name!r} fired; see {log_path}"
            assert proc.returncode == 0, f"final run exited {proc.returncode}; see {log_path}"
        with log_path.open("a") as fh:
            fh.write(f"\n===== {landed[-1] if point else 'final run'} =====\n")
    return landed


def _report(run_dir: Path) -> dict[str, Any]:
    report = json.loads((run_dir / "report" / "report.json").read_text())
    for metrics in report["crosscoders"].values():
        for key in TIME_DEPENDENT:
            metrics.pop(key)
    return report


def _examples(run_dir: Path) -> dict[str, list[str]]:
    return {p.name: gzip.open(p, "rt").read().splitlines() for p in sorted((run_dir / "examples").glob("*.gz"))}


@pytest.mark.timeout(600)
def test_kill_anywhere_then_rerun_gives_the_same_report(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file

    from latentdiff.agent.state import read_findings
    from latentdiff.core.select import read_table

    config_a, dir_a = _write_config(tmp_path, "A")
    config_b, dir_b = _write_config(tmp_path, "B")
    t0 = time.monotonic()
    proc = _start(config_a, tmp_path / "A.log")
    assert proc.wait(timeout=ATTEMPT_TIMEOUT_S) == 0, (tmp_path / "A.log").read_text()[-3000:]
    t_a = time.monotonic() - t0
    landed = _run_with_kills(config_b, dir_b, _kill_points(random.Random(1234)), tmp_path / "B.log")
    log.info("uninterrupted run %.0fs; killed run %.0fs; kills: %s", t_a, time.monotonic() - t0 - t_a, landed)

    assert any("['harvest']" in x for x in landed), f"no kill landed in the harvest: {landed}"
    text = (tmp_path / "B.log").read_text(errors="replace")
    for resumed in ("resuming crosscoder training at step", "agent: resuming thread"):
        assert resumed in text, f"no {resumed!r} in the killed run's log: that resume path went untested"

    assert _report(dir_b) == _report(dir_a)
    assert json.loads((dir_b / "aggregate.json").read_text()) == json.loads((dir_a / "aggregate.json").read_text())
    findings_a, findings_b = read_findings(dir_a), read_findings(dir_b)
    assert findings_a and findings_b == findings_a
    assert read_table(dir_b / "latents.parquet") == read_table(dir_a / "latents.parquet")
    assert _examples(dir_b) == _examples(dir_a)
    weights_a = load_file(str(dir_a / "crosscoders" / "joint" / "crosscoder.safetensors"))
    weights_b = load_file(str(dir_b / "crosscoders" / "joint" / "crosscoder.safetensors"))
    assert weights_a.keys() == weights_b.keys()
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a), "crosscoder weights differ"
    assert not (dir_b / "crosscoders" / "joint" / "checkpoint.pt").exists()
