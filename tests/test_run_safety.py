"""Run safety (issue 15): a run directory never gives a silently wrong answer.

- the store never serves another crosscoder's examples or findings, nor findings of other label settings;
- `train` fails with one line when the activation cache cannot fill a batch (it used to spin forever);
- an HTTP 200 judge answer that is not JSON is retried like any transient error;
- judge failures leave the label stage not done, and a plain rerun judges exactly the failed latents;
- checkpoints load with weights_only=True: a crafted pickle is refused, never run.
Each test fails on the code before these fixes.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import torch

from latentdiff import errors
from latentdiff.agent.state import read_findings
from latentdiff.config import CrosscoderConfig, dump_config
from latentdiff.run import Run
from tests.conftest import small_run_config


def _copy_run(core_run: Run, dest: Path, **over: Any) -> Run:
    shutil.copytree(core_run.dir, dest)
    run = Run(small_run_config(dest, **over))
    run.show_progress = False
    return run


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "latentdiff.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def _error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The CLI's one error line (logging goes to stderr too); no traceback."""
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [ln for ln in proc.stderr.splitlines() if "error:" in ln]
    assert len(lines) == 1, proc.stderr[-3000:]
    return lines[0]


# --------------------------------------------------------------------------- a local OpenAI-compatible judge


class JudgeServer:
    """/v1/chat/completions on 127.0.0.1 (a thread per request). `policy(kind, n)` -> 'valid', 'junk'
    (HTTP 200, body not JSON), 'truncated' (HTTP 200, JSON cut off) or '503', where kind is
    'latent_label' or 'detection' and n counts the requests so far (all kinds)."""

    def __init__(self, policy: Callable[[str, int], str], port: int = 0) -> None:
        self.policy = policy
        self.lock = threading.Lock()
        self.requests: list[tuple[str, str]] = []  # (kind, action)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fmt = body["response_format"]["json_schema"]
                with server.lock:
                    action = server.policy(fmt["name"], len(server.requests))
                    server.requests.append((fmt["name"], action))
                if action == "503":
                    status, payload = 503, json.dumps({"error": {"message": "overloaded"}}).encode()
                else:
                    status, payload = 200, server.answer(body, fmt)
                    if action == "junk":
                        payload = b"<html><body>502 Bad Gateway</body></html>"
                    elif action == "truncated":
                        payload = payload[: len(payload) // 2]
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @staticmethod
    def answer(body: dict[str, Any], fmt: dict[str, Any]) -> bytes:
        schema = fmt["schema"]
        if fmt["name"] == "detection":
            n = schema["properties"]["answers"]["minItems"]
            content = {"answers": [i % 2 for i in range(n)]}
        else:
            content = {"name": "a planted feature", "description": "Fires on the planted tokens.",
                       "category": schema["properties"]["category"]["enum"][0], "subcategory": None,
                       "confidence": 0.8, "evidence": ["token"]}
        return json.dumps({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": json.dumps(content)},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20},
        }).encode()

    def count(self, kind: str, action: str | None = None) -> int:
        with self.lock:
            return sum(k == kind and (action is None or a == action) for k, a in self.requests)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _judge(port: int, **kw: Any) -> dict[str, Any]:
    return {"spec": f"openai:http://127.0.0.1:{port}/v1@m", "timeout_s": 10, "cache": False, **kw}


# --------------------------------------------------------------------------- 1. stale store contents


def _indexed_and_labelled(core_run: Run, dest: Path) -> tuple[Run, list[Any]]:
    """A copy of the core run through index and label (offline judge, 4 latents); the store's findings."""
    from latentdiff.stages import open_store

    run = _copy_run(core_run, dest, agent={"max_latents": 4})
    for stage in ("index", "label"):
        run.stage(stage)
    with open_store(run.cfg, run.dir) as store:
        findings = list(store.iter_findings())
    assert len({f.ref.key for f in findings}) == 4
    return run, findings


def test_store_never_serves_findings_of_other_label_settings(core_run: Run, tmp_path: Path) -> None:
    from latentdiff.stages import open_store

    run, _ = _indexed_and_labelled(core_run, tmp_path / "run")
    relabel = Run(small_run_config(run.dir, agent={"max_latents": 2}))  # same crosscoder, other label settings
    with open_store(relabel.cfg, relabel.dir) as store:
        assert list(store.iter_findings()) == [] and store.count_findings() == 0
        assert store.search_findings("planted feature", n=5) == []
        assert store.count_examples() > 0  # the examples are the same crosscoder's: still served


def test_store_never_serves_another_crosscoders_examples_or_findings(core_run: Run, tmp_path: Path) -> None:
    from latentdiff.core.examples import read_examples
    from latentdiff.stages import open_store
    from latentdiff.store.chroma import LatentStore

    run, old_findings = _indexed_and_labelled(core_run, tmp_path / "run")
    # retrain in the same run dir (`latentdiff run CFG --from train crosscoder.seed=1`), up to index
    cc = small_run_config(run.dir).crosscoder.model_dump() | {"seed": 1}
    again = Run(small_run_config(run.dir, crosscoder=cc, agent={"max_latents": 4}))
    again.show_progress = False
    from latentdiff import stages

    for name in ("train", "select", "sample", "index", "label", "aggregate", "report"):
        stages.invalidate(again.dir, name)
    for name in ("train", "select", "sample", "index"):
        again.stage(name)
    new = list(read_examples(again.dir / "examples" / "joint.jsonl.gz"))
    by_latent: dict[int, list[Any]] = {}
    for ex in new:
        by_latent.setdefault(ex.latent, []).append(ex)
    with open_store(again.cfg, again.dir) as store:
        assert store.count_examples() == len(new)
        assert store.latent_ids("joint") == sorted(by_latent)
        for latent, mine in by_latent.items():
            got = store.examples_for("joint", latent)
            assert sorted((e.kind, e.ctx, e.start) for e in got) == sorted((e.kind, e.ctx, e.start) for e in mine)
        for old in old_findings:  # findings of the seed-0 crosscoder are never served for seed 1
            assert store.get_finding(old.ref.crosscoder, old.ref.latent) == []
        assert list(store.iter_findings()) == [] and store.search_findings("planted feature", n=5) == []
        hits = store.search_examples("the", n=50)
        assert hits and all(h.example.latent in by_latent for h in hits)
    # the stale rows are gone from the collection, not only filtered out
    with LatentStore(again.cfg.store, again.cfg.name, again.dir / "chroma") as raw:
        assert raw.count_examples() == len(new) and raw.count_findings() == 0


# --------------------------------------------------------------------------- 2. train cannot fill a batch


def test_a_batch_the_cache_cannot_fill_is_an_error_not_a_hang(tmp_path: Path) -> None:
    from latentdiff.core.cache import ShuffledStream, read_manifest
    from tests.test_train import _fake_cache

    cache = tmp_path / "cache"
    _fake_cache(cache)  # 640 rows in shards of ~100
    rows = read_manifest(cache).n_tokens
    with pytest.raises(errors.LatentDiffError) as info:  # the stream used to yield nothing, forever
        ShuffledStream(cache, batch_size=4096, seed=0, window_shards=4)
    assert type(info.value).__name__ == "NotEnoughData"
    msg = str(info.value)
    assert "\n" not in msg and "batch_size=4096" in msg and str(rows) in msg and str(cache) in msg
    assert next(ShuffledStream(cache, batch_size=400, seed=0, window_shards=4).batches()).shape[0] == 400


def test_train_stage_with_an_unfillable_batch_fails_in_one_line(core_run: Run, tmp_path: Path) -> None:
    from latentdiff import stages

    run = _copy_run(core_run, tmp_path / "run")
    for name in ("train", "select", "sample"):
        stages.invalidate(run.dir, name)  # the crosscoders go too
    cfg_path = tmp_path / "tiny.yaml"
    dump_config(run.cfg, cfg_path)
    try:
        proc = _cli("train", str(cfg_path), "crosscoder.batch_size=65536", timeout=180)
    except subprocess.TimeoutExpired:
        pytest.fail("train spun without end on a batch the cache cannot fill")
    assert proc.returncode == 2, proc.stderr[-3000:]
    line = _error_line(proc)
    assert "crosscoder.batch_size=65536" in line and "rows" in line
    assert not (run.dir / "crosscoders" / "joint" / "metrics.jsonl").exists()  # before training started


# --------------------------------------------------------------------------- 3. junk judge answers


def test_junk_judge_answers_are_retried(core_run: Run, tmp_path: Path) -> None:
    server = JudgeServer(lambda kind, n: "junk" if n % 2 == 0 else "valid")  # junk every other time
    try:
        run = _copy_run(core_run, tmp_path / "run", judge=_judge(server.port, retries=3),
                        agent={"max_latents": 3, "concurrency": 1})
        run.stage("index")
        run.stage("label")
    finally:
        server.close()
    findings = {f.ref.key: f for f in read_findings(run.dir)}
    assert len(findings) == 3 and all(f.label is not None for f in findings.values())
    assert server.count("latent_label", "junk") >= 1 and server.count("latent_label", "valid") == 3
    assert json.loads((run.dir / "stages" / "label.json").read_text())["failed"] == 0


def test_junk_and_truncated_answers_are_recorded_per_latent(tmp_path: Path) -> None:
    import asyncio

    from latentdiff.agent.judges.base import JudgeError, LabelRequest
    from latentdiff.agent.judges.registry import make_judge
    from latentdiff.agent.judges.taxonomy import load_taxonomy
    from latentdiff.config import JudgeConfig
    from latentdiff.records import ExampleText

    for action in ("junk", "truncated"):
        server = JudgeServer(lambda kind, n, a=action: a)
        try:
            judge = make_judge(f"openai:http://127.0.0.1:{server.port}/v1@m", JudgeConfig(spec="x", retries=2))
            judge.backoff_s = 0.01  # type: ignore[attr-defined]
            ex = ExampleText(text="<<hola>> amigo", plain="hola amigo", max_act=1.0)
            request = LabelRequest(latent="joint:1", top=[ex], taxonomy=load_taxonomy())

            async def ask() -> Any:
                try:
                    return await judge.label(request)
                finally:
                    await judge.aclose()

            with pytest.raises(JudgeError) as info:
                asyncio.run(ask())
        finally:
            server.close()
        assert info.value.kind == "invalid" and "not JSON" in info.value.reason and "\n" not in info.value.reason
        assert server.count("latent_label") == 3  # every attempt made


# --------------------------------------------------------------------------- 4. judge failures are not final


def test_failed_latents_leave_label_not_done_and_a_rerun_judges_only_them(core_run: Run, tmp_path: Path) -> None:
    from latentdiff import stages

    # the judge answers one label, then goes down (503) for every other label request
    server = JudgeServer(lambda kind, n: "valid" if kind == "detection" or n == 0 else "503")
    try:
        run = _copy_run(core_run, tmp_path / "run", judge=_judge(server.port, retries=1),
                        agent={"max_latents": 3, "concurrency": 1})
        run.stage("index")
        cfg_path = tmp_path / "run.yaml"
        dump_config(run.cfg, cfg_path)
        proc = _cli("run", str(cfg_path))
        first = {f.ref.key: f for f in read_findings(run.dir)}
        labelled_before = {k for k, f in first.items() if f.label is not None}
    finally:
        server.close()
    assert proc.returncode == 3, proc.stderr[-3000:]
    line = _error_line(proc)
    assert "judging failed for 2 of 3 latents" in line and "again" in line, line
    assert len(first) == 3 and len(labelled_before) == 1
    assert not stages.is_done(run.cfg, run.dir, "label") and run.status()["label"] == "started"
    assert not (run.dir / "report" / "report.json").exists()
    kept = (run.dir / "findings" / f"{next(iter(labelled_before)).replace(':', '_')}.json").read_text()

    # the judge is back: a plain rerun judges the two failed latents, once each, and nothing else
    server = JudgeServer(lambda kind, n: "valid", port=server.port)
    try:
        run.stage("label")
    finally:
        server.close()
    assert server.count("latent_label") == 2
    findings = {f.ref.key: f for f in read_findings(run.dir)}
    assert set(findings) == set(first) and all(f.label is not None for f in findings.values())
    assert (run.dir / "findings" / f"{next(iter(labelled_before)).replace(':', '_')}.json").read_text() == kept
    marker = json.loads((run.dir / "stages" / "label.json").read_text())
    assert stages.is_done(run.cfg, run.dir, "label") and marker["failed"] == 0
    run.stage("label")  # done: nothing judged again
    assert server.count("latent_label") == 2


# --------------------------------------------------------------------------- 5. checkpoints: weights only


def test_checkpoints_load_weights_only_and_a_crafted_pickle_is_refused(tmp_path: Path) -> None:
    from tests.test_train import _fake_cache, _trainer

    cache = tmp_path / "cache"
    _fake_cache(cache)
    cfg = CrosscoderConfig(dict_size=32, k=4, batch_size=64, steps=4, checkpoint_every=2, warmup_steps=1,
                           dead_tokens=200, lr=1e-3)
    trainer = _trainer(tmp_path / "cc", cache, cfg)
    trainer.step = 3
    trainer.save_checkpoint()
    torch.load(trainer.ckpt_path, weights_only=True)  # tensors and plain values only
    resumed = _trainer(tmp_path / "cc", cache, cfg)
    assert resumed.load_checkpoint() and resumed.step == 3

    pwned = tmp_path / "pwned"

    class Payload:
        def __reduce__(self) -> tuple[Any, ...]:
            return (Path.touch, (pwned,))

    state = torch.load(trainer.ckpt_path, weights_only=True)
    torch.save({**state, "rng": Payload()}, trainer.ckpt_path)
    with pytest.raises(Exception) as info:  # noqa: PT011 - checked below, after the payload check
        _trainer(tmp_path / "cc", cache, cfg).load_checkpoint()
    assert not pwned.exists(), "loading a checkpoint ran code from it"
    assert type(info.value).__name__ == "UnsafeCheckpoint" and isinstance(info.value, errors.LatentDiffError)
    msg = str(info.value)
    assert "\n" not in msg and str(trainer.ckpt_path) in msg and "refused" in msg

    trainer.ckpt_path.write_bytes(b"PK\x03\x04 not really a zip")  # truncated / garbage: one line too
    with pytest.raises(errors.LatentDiffError, match="not a readable checkpoint"):
        _trainer(tmp_path / "cc", cache, cfg).load_checkpoint()
