"""Index and offline-label throughput: the issue-18 baseline vs today's path, in one process, on one run.

    python -m benchmarks.bench_index_label RUN_DIR [--examples 0] [--skip-label]

RUN_DIR: a finished run whose judge is the offline `embedding` judge (e.g. the demo). Prints one line per
measurement and the ratio (docs/benchmarks.md "Index and label").

- index: examples/s storing the run's examples into a fresh embedded Chroma store (a temp dir),
  (a) baseline: Chroma's embedding function embeds every example's marked text, as before issue 18;
  (b) now: each distinct unmarked window is embedded once (`VectorCache`; the document stays the marked text).
- label: latents/min of the label stage on a copy of the run,
  (a) baseline: one findings upsert per latent on the event loop, one store query per latent, the judge
  embedding every text itself (no vectors from the index stage);
  (b) now: findings upserted in batches off the loop, a wave's examples read 16 latents per query, the
  index stage's vectors reused.
The embedding model is loaded once for the whole process (before either is timed).
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _index(examples: list[Any], store_dir: Path, baseline: bool) -> float:
    """Seconds to store the examples (fresh store)."""
    from latentdiff.config import StoreConfig
    from latentdiff.store.chroma import LatentStore, example_id
    from latentdiff.store.embeddings import VectorCache

    store = LatentStore(StoreConfig(path=str(store_dir)), "bench")
    t0 = time.perf_counter()
    if baseline:  # the documents embedded by the collection's embedding function, one per example
        fp = store.fingerprint("joint")
        rows = ((example_id("bench", "joint", ex, fp), ex.marked_text(),
                 {"run": "bench", "crosscoder": "joint", "latent": int(ex.latent), "kind": ex.kind}, None)
                for ex in examples)
        store._upsert(store.examples, rows)
    else:
        store.add_examples("joint", examples, VectorCache(store_dir.with_suffix(".vec")))
    seconds = time.perf_counter() - t0
    store.close()
    return seconds


@contextlib.contextmanager
def _baseline_label() -> Iterator[None]:
    """The label stage as it was before issue 18 (restored on exit)."""
    from latentdiff.agent import state
    from latentdiff.agent.judges import embedding_judge

    async def one_upsert_on_the_loop(self: Any, findings: list[Any]) -> None:
        self.store.upsert_findings(findings)

    saved = (state.AgentContext.index_findings, state.PREFETCH, embedding_judge.EmbeddingJudge._cache)
    state.AgentContext.index_findings = one_upsert_on_the_loop  # type: ignore[method-assign]
    state.PREFETCH = 1
    embedding_judge.EmbeddingJudge._cache = lambda self: None  # type: ignore[method-assign]
    try:
        yield
    finally:
        state.AgentContext.index_findings, state.PREFETCH, embedding_judge.EmbeddingJudge._cache = saved


def _label(run: Path, work: Path, baseline: bool) -> tuple[float, int]:
    """(seconds, latents) of the label stage on a copy of the run."""
    from latentdiff.config import load_config
    from latentdiff.run import Run
    from latentdiff.rundir import RunDir

    copy = work / ("label-baseline" if baseline else "label-now")
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("activations"))
    rd = RunDir(copy)
    if baseline:
        rd.vectors.unlink(missing_ok=True)
    cfg = load_config(rd.config, [f"run_dir={copy}"])
    ctx = _baseline_label() if baseline else contextlib.nullcontext()
    with ctx:
        t0 = time.perf_counter()
        Run(cfg).stage("label", fresh=True)
        seconds = time.perf_counter() - t0
    return seconds, int((rd.read_marker("label") or {}).get("latents", 0))


def main() -> None:
    """Measure and print."""
    from latentdiff.core.examples import read_examples
    from latentdiff.rundir import RunDir
    from latentdiff.store.embeddings import encode

    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path)
    ap.add_argument("--examples", type=int, default=0, help="index only the first N examples (0 = all)")
    ap.add_argument("--skip-label", action="store_true")
    args = ap.parse_args()
    rd = RunDir(args.run)
    name = rd.crosscoder_names()[0]
    examples = list(read_examples(rd.examples(name)))
    if args.examples:
        examples = examples[: args.examples]
    encode(["warm up the embedding model"])
    windows = len({"".join(ex.tokens) for ex in examples})
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        before = _index(examples, work / "store-baseline", baseline=True)
        now = _index(examples, work / "store-now", baseline=False)
        n = len(examples)
        print(f"index: {n} examples ({windows} distinct windows): baseline {n / before:.1f} examples/s "
              f"({before:.1f} s), now {n / now:.1f} examples/s ({now:.1f} s): {before / now:.2f}x")
        if args.skip_label:
            return
        b_s, b_n = _label(args.run, work, baseline=True)
        n_s, n_n = _label(args.run, work, baseline=False)
        print(f"label: baseline {60 * b_n / b_s:.1f} latents/min ({b_n} in {b_s:.1f} s), now "
              f"{60 * n_n / n_s:.1f} latents/min ({n_n} in {n_s:.1f} s): {b_s / n_s * n_n / max(b_n, 1):.2f}x")


if __name__ == "__main__":
    main()
