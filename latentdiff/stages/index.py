"""The index stage: every example into the Chroma store, under its crosscoder's weight fingerprint."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from latentdiff.config import RunConfig
from latentdiff.results import IndexResult
from latentdiff.rundir import RunDir
from latentdiff.stages.base import RunPath, crosscoder_plan, is_done, mark_done, stage_hash

log = logging.getLogger(__name__)


FINGERPRINT_CHARS = 16


def _sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 23):
            h.update(chunk)
    return h.hexdigest()


def crosscoder_fingerprints(cfg: RunConfig, run_dir: RunPath) -> dict[str, dict[str, Any]]:
    """Crosscoder name -> {"sha256": 16-hex prefix of crosscoder.safetensors, "size", "mtime_ns"}: which
    weights the store's rows belong to. The index marker's record is reused while the file's size and
    mtime match it (no rehash); it also stands for weights deleted after indexing."""
    rd = RunDir.of(run_dir)
    recorded: dict[str, Any] = {}
    if is_done(cfg, rd, "index"):
        recorded = (rd.read_marker("index") or {}).get("fingerprints") or {}
    out: dict[str, dict[str, Any]] = {}
    for name in crosscoder_plan(cfg):
        path = rd.crosscoder_weights(name)
        rec = recorded.get(name) if isinstance(recorded.get(name), dict) else None
        if path.is_file():
            st = path.stat()
            if rec and rec.get("sha256") and (rec.get("size"), rec.get("mtime_ns")) == (st.st_size, st.st_mtime_ns):
                out[name] = rec
            else:
                out[name] = {"sha256": _sha256(path)[:FINGERPRINT_CHARS], "size": st.st_size,
                             "mtime_ns": st.st_mtime_ns}
        elif rec and rec.get("sha256"):
            out[name] = rec
    return out


def store_scope(cfg: RunConfig, run_dir: RunPath, fingerprints: dict[str, dict[str, Any]] | None = None) -> Any:
    """The `StoreScope` of a run: its crosscoders' weight fingerprints and its label settings' hash."""
    from latentdiff.store.chroma import StoreScope

    fps = crosscoder_fingerprints(cfg, run_dir) if fingerprints is None else fingerprints
    return StoreScope({name: rec["sha256"] for name, rec in fps.items()}, label=stage_hash(cfg, "label"))


def open_store(cfg: RunConfig, run_dir: RunPath, fingerprints: dict[str, dict[str, Any]] | None = None) -> Any:
    """The run's `LatentStore`, scoped to its crosscoder weights and label settings."""
    from latentdiff.store.chroma import LatentStore

    rd = RunDir.of(run_dir)
    return LatentStore(cfg.store, cfg.name, rd.chroma, scope=store_scope(cfg, rd, fingerprints))


def run_index(cfg: RunConfig, run_dir: RunPath, show: bool = True) -> None:
    """Upsert every example into the Chroma store under its crosscoder's weight fingerprint
    (deterministic ids: reruns do not duplicate); rows of other weights or label settings are removed."""
    from latentdiff.core.examples import read_examples

    rd = RunDir.of(run_dir)
    counts = {}
    fingerprints = crosscoder_fingerprints(cfg, rd)
    from latentdiff.progress import LineProgress

    total = sum((rd.read_marker("sample") or {}).get("examples", {}).values()) or None
    from latentdiff.store.embeddings import VectorCache

    vectors = VectorCache(rd.vectors)
    with open_store(cfg, rd, fingerprints) as store, LineProgress(every_s=30.0, disable=not show) as bar:
        store.prune()
        task = bar.add_task("index (examples stored)", total=total)

        def counted(examples: Any) -> Any:
            for ex in examples:
                bar.advance(task)
                yield ex

        for cc_name in crosscoder_plan(cfg):
            counts[cc_name] = store.add_examples(cc_name, counted(read_examples(rd.examples(cc_name))), vectors)
    log.info("index: %d distinct windows embedded, %d reused", vectors.misses, vectors.hits)
    vectors.close()
    mark_done(cfg, rd, "index", {"examples": counts, "fingerprints": fingerprints})


def read_index(cfg: RunConfig, rd: RunDir, info: dict[str, Any]) -> IndexResult:
    """What went into the store."""
    return IndexResult(examples=info["examples"], store=cfg.store.url or cfg.store.path or str(rd.chroma))
