"""Labelling with several workers: two `latentdiff label --worker I/2` processes in separate run
directories (as on two machines) share one real `chroma run` server and spread their judge calls
over two OpenAI-compatible endpoints (two counting pass-through endpoints in front of the real CPU
vLLM server); the merge run collects every finding from the store without judging again."""

from __future__ import annotations

import http.client
import json
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from latentdiff.agent.nodes import worker_of
from latentdiff.agent.state import needs_retry, read_findings
from latentdiff.config import load_config
from latentdiff.core.select import read_table
from latentdiff.stages import label_plan
from latentdiff.store.chroma import LatentStore
from tests.conftest import small_run_config
from tests.test_store import chroma_server  # noqa: F401 - the real `chroma run` fixture


class CountingEndpoint:
    """A second HTTP endpoint: forwards every request to the upstream server and counts them."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        self.count = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.command == "POST":
                    outer.count += 1
                conn = http.client.HTTPConnection(host, port, timeout=300)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                conn.request(self.command, self.path, body=body or None, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                conn.close()

            do_GET = do_POST = _forward  # noqa: N815

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def endpoints(vllm_server: tuple[str, str]) -> Iterator[list[CountingEndpoint]]:
    url, _ = vllm_server
    eps = [CountingEndpoint(url), CountingEndpoint(url)]
    yield eps
    for e in eps:
        e.close()


def _config(run_dir: Path, store_url: str, endpoints: list[CountingEndpoint], model: str) -> Path:
    cfg = small_run_config(run_dir, store={"url": store_url},
                           judge={"spec": f"vllm:{','.join(e.url for e in endpoints)}@{model}", "retries": 2})
    path = run_dir.parent / f"{run_dir.name}.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    return path


def _cli(*args: str) -> subprocess.Popen[str]:
    exe = Path(sys.executable).with_name("latentdiff")
    return subprocess.Popen([str(exe), *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_two_workers_one_store_two_endpoints(core_run, chroma_server: str,  # noqa: F811
                                             endpoints: list[CountingEndpoint], vllm_server, tmp_path: Path) -> None:
    model = vllm_server[1]
    dirs = [tmp_path / "machine0" / "run", tmp_path / "machine1" / "run"]
    configs = []
    for d in dirs:  # two machines: each has its own copy of the run up to `sample`
        shutil.copytree(core_run.dir, d)
        configs.append(_config(d, chroma_server, endpoints, model))
    index = _cli("index", str(configs[0]))  # examples go to the shared server once
    assert index.wait(timeout=300) == 0, index.stdout.read() if index.stdout else ""

    workers = [_cli("label", str(configs[i]), "--worker", f"{i}/2") for i in range(2)]
    logs = [w.communicate(timeout=900)[0] for w in workers]
    # exit 3: some latents' judging failed (e.g. a timeout on the CPU server); the merge run judges them again
    assert all(w.returncode in (0, 3) for w in workers), "\n".join(x[-3000:] for x in logs)

    plan = set(label_plan(load_config(configs[0]), read_table(dirs[0] / "latents.parquet")))
    mine = [{f.ref.key for f in read_findings(d)} for d in dirs]
    assert mine[0].isdisjoint(mine[1]), "a latent was labelled by both workers"
    assert mine[0] | mine[1] == plan, "a latent was labelled by no worker"
    assert all(worker_of(k, 2) == i for i in range(2) for k in mine[i])
    calls = [e.count for e in endpoints]
    assert all(c > 0 for c in calls), f"both endpoints must serve requests: {calls}"

    failed = {f.ref.key for d in dirs for f in read_findings(d) if needs_retry(f)}
    for _ in range(3):  # collects machine1's findings from the server; exit 3: judging failed again, rerun
        merge = _cli("label", str(configs[0]))
        out = merge.communicate(timeout=600)[0]
        if merge.returncode != 3:
            break
    assert merge.returncode == 0, out[-3000:]
    if not failed:
        assert [e.count for e in endpoints] == calls, "the merge judged latents again"
    merged = read_findings(dirs[0])
    pairs = [(f.ref.key, f.pair) for f in merged]
    assert len(pairs) == len(set(pairs)) and {k for k, _ in pairs} == plan
    marker = json.loads((dirs[0] / "stages" / "label.json").read_text())
    assert marker["latents"] == len(plan)

    cfg = small_run_config(dirs[0], store={"url": chroma_server})
    with LatentStore(cfg.store, cfg.name) as store:
        stored = [(f.ref.key, f.pair) for f in store.iter_findings()]
    assert sorted(stored) == sorted(pairs), "store and merged table differ (duplicate or lost finding)"
    agg = _cli("aggregate", str(configs[0]))
    assert agg.wait(timeout=300) == 0
    assert (dirs[0] / "aggregate.json").is_file()
