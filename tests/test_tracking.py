"""Experiment logging (issue 17.5): train/ and label/ scalars to TensorBoard (read back with TensorBoard's own
reader) and W&B offline; the `log` section changes no stage hash; a missing backend is one line."""

from __future__ import annotations

import json
import shutil
import struct
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from latentdiff import stages
from latentdiff.config import RunConfig, build_config
from latentdiff.errors import ConfigError
from latentdiff.rundir import RunDir
from latentdiff.tracking import MetricsLogger
from tests.conftest import small_run_config

LOGGED = {"tensorboard": True, "tensorboard_dir": None, "wandb": True, "wandb_project": "elsewhere",
          "wandb_mode": "online"}


def _scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Tag -> [(step, value)] of one TensorBoard run directory, as TensorBoard itself reads it."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})  # 0: keep every event
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _rows(path: Path) -> list[dict[str, float]]:
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln]


def _assert_matches_metrics(tb_run: Path, metrics: Path) -> None:
    """Every metrics.jsonl column is a train/ tag with one event per row, at the row's step and value."""
    rows, got = _rows(metrics), _scalars(tb_run)
    assert rows, metrics
    assert set(got) == {f"train/{k}" for k in rows[0] if k != "step"}, sorted(got)
    for key in rows[0]:
        if key != "step":
            expected = [(r["step"], pytest.approx(r[key], rel=1e-6, abs=1e-7)) for r in rows]
            assert got[f"train/{key}"] == expected, key


# --------------------------------------------------------------------------- settings


def test_log_section_changes_no_stage_hash() -> None:
    base = RunConfig()
    logged = build_config({"log": LOGGED})
    assert logged.log.tensorboard and logged.log.wandb_mode == "online"
    assert all("log" not in s.sections for s in stages.STAGES)
    for name in stages.STAGE_NAMES:
        assert stages.stage_hash(logged, name) == stages.stage_hash(base, name), name
    everything = [n for n in RunConfig.model_fields if n != "log"]
    assert logged.section_hash(*everything) == base.section_hash(*everything)
    with pytest.raises(ConfigError, match="log.wandb_mode"):
        build_config({}, ["log.wandb_mode=cloud"])


@pytest.mark.parametrize("package", ["tensorboard", "wandb"])
def test_missing_backend_is_one_line_naming_the_extra(
    package: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, package, None)  # `import package` raises ImportError
    cfg = small_run_config(tmp_path / "run", log={package: True})
    msg = f"log.{package} needs the {package} package: pip install 'latentdiff[{package}]'"
    for stage in ("train", "label"):  # checked before the stage touches the run directory
        with pytest.raises(ConfigError) as err:
            stages.validate(cfg, [stage])
        assert str(err.value) == msg
    with pytest.raises(ConfigError, match=msg.replace("[", r"\[").replace("]", r"\]")):
        stages.metrics_logger(cfg, tmp_path / "run", "train", "joint")
    assert not (tmp_path / "run").exists()
    # logging off: nothing is imported, nothing is written
    with stages.metrics_logger(small_run_config(tmp_path / "run"), tmp_path / "run", "label") as off:
        assert not off.enabled
        off.log({"x": 1.0}, 1, "label")
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------- train: kill and resume


def test_resumed_training_replaces_the_steps_logged_after_the_checkpoint(tmp_path: Path) -> None:
    """Killed after logging step 30 with the checkpoint at 20: the resumed run logs 30 again, and TensorBoard
    shows one event per step, the resumed run's (tok_s differs between the two processes)."""
    from latentdiff.config import CrosscoderConfig
    from latentdiff.core.cache import ShuffledStream
    from tests.test_train import _fake_cache, _Killed, _trainer

    cache, out, tb = tmp_path / "cache", tmp_path / "cc", tmp_path / "tb"
    _fake_cache(cache)
    cfg = CrosscoderConfig(dict_size=32, k=4, batch_size=64, steps=40, checkpoint_every=20, warmup_steps=5,
                           dead_tokens=200, lr=1e-3)
    stream = ShuffledStream(cache, cfg.batch_size, seed=1, window_shards=2)

    def dying(start: int):
        for i, b in enumerate(stream.batches(start)):
            if i == 35:
                raise _Killed
            yield b

    with pytest.raises(_Killed), MetricsLogger(tb) as tracker:
        _trainer(out, cache, cfg).fit(dying, show=False, tracker=tracker)
    first = _scalars(tb)["train/tok_s"]
    assert [s for s, _ in first] == [10, 20, 30]
    time.sleep(1.1)  # event files are named by the second they were opened: the resumed one sorts after
    with MetricsLogger(tb) as tracker:
        _trainer(out, cache, cfg).fit(stream.batches, show=False, tracker=tracker)
    _assert_matches_metrics(tb, out / "metrics.jsonl")
    resumed = dict(_scalars(tb)["train/tok_s"])
    assert resumed[30] != dict(first)[30]  # the killed run's step 30 was replaced, not kept beside it


# --------------------------------------------------------------------------- the stages, end to end


def _copy(run: Any, dst: Path) -> Path:
    shutil.copytree(run.dir, dst)
    return dst


def test_train_stage_logs_every_metrics_row_per_replicate(core_run, tmp_path: Path) -> None:
    """Two replicate seeds: one TensorBoard run each (train/joint, train/joint-seed1) in log.tensorboard_dir,
    each equal to its crosscoder's metrics.jsonl."""
    from latentdiff.run import Run

    tb = tmp_path / "tb"
    cfg = small_run_config(_copy(core_run, tmp_path / "run"), log={"tensorboard": True, "tensorboard_dir": str(tb)})
    cfg.crosscoder.seeds, cfg.crosscoder.steps = [0, 1], 20
    run = Run(cfg)
    run.show_progress = False
    run.stage("train")
    rd = RunDir(run.dir)
    assert sorted(p.name for p in (tb / "train").iterdir()) == ["joint", "joint-seed1"]
    for name in ("joint", "joint-seed1"):
        _assert_matches_metrics(tb / "train" / name, rd.training_metrics(name))
    assert not rd.tensorboard.exists()  # tensorboard_dir was set


def test_label_stage_logs_each_wave(core_run, tmp_path: Path) -> None:
    """Toggling log.tensorboard keeps the done stages done (nothing retrains); label logs label/ scalars after
    each adaptive wave, the last equal to the findings and the stage's judge calls."""
    from latentdiff.run import Run

    cfg = small_run_config(_copy(core_run, tmp_path / "run"), log={"tensorboard": True},
                           agent={"adaptive": True, "wave_size": 6, "max_latents": 12})
    run = Run(cfg)
    run.show_progress = False
    assert all(run.status()[s] == "done" for s in ("harvest", "train", "select", "sample"))
    run.stage("index")
    run.stage("label")
    rd = RunDir(run.dir)
    assert sorted(p.name for p in rd.tensorboard.iterdir()) == ["label"]  # train was not rerun
    got = _scalars(rd.tensorboard / "label")
    assert {"label/latents_labelled", "label/latents_failed", "label/latents_queued", "label/wave_latents",
            "label/judge_calls", "label/verification_mean", "label/judge_requests", "label/judge_failures",
            "label/judge_retries", "label/judge_prompt_tokens", "label/judge_completion_tokens"} <= set(got), got
    steps = [s for s, _ in got["label/latents_labelled"]]
    assert len(steps) >= 2 and steps == list(range(1, len(steps) + 1)), steps  # one point per wave
    labelled = [v for _, v in got["label/latents_labelled"]]
    assert labelled == sorted(labelled) and labelled[0] < labelled[-1]
    by_key = {f.ref.key: f for f in run.findings()}
    ok = [f for f in by_key.values() if f.label is not None]
    assert labelled[-1] == len(ok)
    assert got["label/judge_calls"][-1][1] == (rd.read_marker("label") or {})["judge_calls"]
    scores = [f.verification for f in ok if f.verification is not None]
    assert scores and got["label/verification_mean"][-1][1] == pytest.approx(sum(scores) / len(scores), rel=1e-6)


# --------------------------------------------------------------------------- W&B offline


def _wandb_records(run_file: Path) -> tuple[Any, list[dict[str, Any]]]:
    """The run record and history rows of an offline W&B run file (run-ID.wandb: a LevelDB-style log of
    Record protobufs; what `wandb sync` uploads), once W&B's service has written its exit record (it may
    still be writing for a moment after `finish()` returns)."""
    from wandb.proto import wandb_internal_pb2 as pb

    deadline = time.monotonic() + 30
    while True:
        run, rows, done = _read_wandb(run_file, pb)
        if done or time.monotonic() > deadline:
            assert done, f"{run_file}: no exit record after 30 s"
            return run, rows
        time.sleep(0.1)


def _read_wandb(run_file: Path, pb: Any) -> tuple[Any, list[dict[str, Any]], bool]:
    data = run_file.read_bytes()
    assert data[:4] == b":W&B", data[:7]
    block, pos, buf, run, rows, done = 32768, 7, b"", None, [], False
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # block trailer
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        buf = chunk if kind in (1, 2) else buf + chunk  # full / first, else middle / last
        if kind in (1, 4):
            rec = pb.Record()
            rec.ParseFromString(buf)
            if rec.WhichOneof("record_type") == "run":
                run = rec.run
            elif rec.WhichOneof("record_type") == "history":
                rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                             for item in rec.history.item})
            done |= rec.WhichOneof("record_type") == "exit"
    return run, rows, done


def test_wandb_offline_run_holds_the_training_history(tmp_path: Path) -> None:
    """log.wandb (offline): the stage's logger writes a W&B run under RUN_DIR/wandb named NAME-train-CROSSCODER,
    with the run config and one history row per metrics.jsonl row."""
    pytest.importorskip("wandb")  # the `wandb` extra; CI's test extra does not install it
    from latentdiff.config import CrosscoderConfig
    from latentdiff.core.cache import ShuffledStream
    from tests.test_train import _fake_cache, _trainer

    cfg = small_run_config(tmp_path / "run", log={"wandb": True})
    cache, out = tmp_path / "cache", tmp_path / "cc"
    _fake_cache(cache)
    cc_cfg = CrosscoderConfig(dict_size=32, k=4, batch_size=64, steps=30, warmup_steps=5, dead_tokens=200, lr=1e-3)
    with stages.metrics_logger(cfg, cfg.resolved_run_dir(), "train", "joint") as tracker:
        _trainer(out, cache, cc_cfg).fit(ShuffledStream(cache, 64, seed=1).batches, show=False, tracker=tracker)
    rd = RunDir(cfg.resolved_run_dir())
    offline = sorted(rd.wandb.glob("offline-run-*"))
    assert len(offline) == 1, offline
    run, history = _wandb_records(next(offline[0].glob("run-*.wandb")))
    assert run is not None and run.display_name == "small-train-joint" and run.run_group == "small"
    config = {item.key: json.loads(item.value_json) for item in run.config.update}
    assert config["crosscoder"]["dict_size"] == 256 and config["log"]["wandb"] is True  # the run's config
    rows = _rows(out / "metrics.jsonl")
    assert [h["_step"] for h in history] == [r["step"] for r in rows] == [10, 20, 30]
    for h, r in zip(history, rows):
        assert {k: h[f"train/{k}"] for k in r if k != "step"} == pytest.approx({k: v for k, v in r.items()
                                                                                 if k != "step"})
    assert not rd.tensorboard.exists()
