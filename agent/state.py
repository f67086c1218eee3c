"""State of the labelling agent: ids and small records only, never example texts or tensors."""

from __future__ import annotations

import asyncio
import json
import operator
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, TypedDict

from latentdiff.config import RunConfig
from latentdiff.io import atomic_write_json, read_models
from latentdiff.records import Finding, LatentRef
from latentdiff.rundir import RunDir


class AgentState(TypedDict, total=False):
    """The parent graph: which latents to label and which are finished."""

    candidates: list[str]  # latent keys "crosscoder:id", in labelling order
    retry: list[str]  # a rerun of a finished thread: latents whose judging failed, labelled again
    skipped: list[str]  # over the max_latents budget, left unlabelled
    done: Annotated[list[str], operator.add]  # keys labelled (or failed) in this run
    queue: list[str]  # candidates not yet given to a wave
    wave: list[str]  # the wave being labelled
    waves: int  # waves started
    weights: dict[str, float]  # adaptive: priority weight per 'pair/side' set (from the last assessment)
    calls_at_start: int  # judge calls already spent when this run started (recorded findings)
    stop_reason: str | None  # why labelling stopped (budget, ci_width, all candidates labelled)
    aggregate: str | None  # path of aggregate.json once written


class LatentTask(TypedDict, total=False):
    """One latent's branch (the per-latent subgraph's state)."""

    key: str
    explain_ids: list[str]  # store ids of the examples shown to the judge
    test_ids: list[str]  # held-out activating examples for detection
    negative_ids: list[str]  # non-activating examples shown to the judge
    test_negative_ids: list[str]  # non-activating examples for detection
    view: str  # which evidence this round shows (agent/refine.py)
    contrast: bool  # show the model-contrast block (refinement rounds)
    round: int  # 0 = first label, 1.. = refinement rounds
    history: list[dict[str, Any]]  # one LabelAttempt (as a dict, + 'stop') per round
    label: dict[str, Any] | None  # LatentLabel as a dict, once judged
    verification: float | None
    attempts: int
    failure: str | None
    done: Annotated[list[str], operator.add]


class Budget:
    """A shared judge-call budget (None = unlimited), safe under asyncio concurrency."""

    def __init__(self, limit: int | None, used: int = 0) -> None:
        self.limit, self.used = limit, used
        self._lock = asyncio.Lock()

    async def take(self, n: int = 1) -> bool:
        """Reserve n calls; False if the budget is exhausted."""
        async with self._lock:
            if self.limit is not None and self.used + n > self.limit:
                return False
            self.used += n
            return True


@dataclass
class AgentContext:
    """Runtime dependencies of the agent (not checkpointed): judge, store, stats, budget."""

    cfg: RunConfig
    run_dir: RunDir  # a Path is turned into one (a staged RunDir writes beside the old findings)
    judge: Any  # latentdiff.agent.judges.base.Judge
    store: Any  # latentdiff.store.chroma.LatentStore
    stats: dict[str, list[Any]]  # key -> LatentStats rows (one per pair the latent was selected for)
    taxonomy: Any
    budget: Budget = field(default_factory=lambda: Budget(None))
    worker: tuple[int, int] | None = None  # (index, count): label only this worker's share
    scaffold: dict[str, float] = field(default_factory=dict)  # key -> share of activation on special tokens
    tracker: Any = None  # latentdiff.tracking.MetricsLogger: label/ scalars after each wave (None = off)
    _examples: OrderedDict[str, list[Any]] = field(default_factory=OrderedDict, repr=False)
    _finished: set[str] = field(default_factory=set, repr=False)  # keys known finished (never un-finish)
    _progress: Any = field(default=None, repr=False)  # LineProgress of the recorded latents
    _upcoming: dict[str, int] = field(default_factory=dict, repr=False)  # key -> position in the wave (expect)
    _upcoming_keys: list[str] = field(default_factory=list, repr=False)
    _pending: list[tuple[list[Finding], asyncio.Future[None]]] = field(default_factory=list, repr=False)
    _flusher: asyncio.Task[None] | None = field(default=None, repr=False)  # upserts `_pending` (index_findings)
    _vectors: Any = field(default=None, repr=False)  # the run's VectorCache, opened on first use

    def __post_init__(self) -> None:
        self.run_dir = RunDir.of(self.run_dir)

    def vectors(self) -> Any:
        """The run's sentence-vector cache (`RunDir.vectors`, shared with the index stage and the embedding
        judge): a finding's label text that the judge embedded is not embedded again when it is indexed."""
        if self._vectors is None:
            from latentdiff.store.embeddings import VectorCache

            self._vectors = VectorCache(self.run_dir.vectors)
        return self._vectors

    def close(self) -> None:
        """Release what the context opened (the run's vector cache); the store and judge belong to the caller."""
        if self._vectors is not None:
            self._vectors.close()
            self._vectors = None

    def recorded(self) -> None:
        """One latent recorded: a progress line (count, ETA, judge calls) at most every 30 s."""
        from latentdiff.progress import LineProgress

        if self._progress is None:
            limit = self.cfg.agent.max_latents
            total = min(len(self.stats), limit) if limit else len(self.stats)
            self._progress = LineProgress(every_s=30.0)
            self._progress.add_task("label (latents recorded)", total=total, info="")
        self._progress.update(0, advance=1, info=f"{self.budget.used} judge calls")

    def expect(self, keys: list[str]) -> None:
        """The latents about to be labelled, in order (a wave): `examples` reads them from the store in chunks."""
        self._upcoming = {k: i for i, k in enumerate(keys)}
        self._upcoming_keys = list(keys)

    def examples(self, key: str) -> list[Any]:
        """A latent's stored examples (read from the store once per latent; a small LRU). A miss also reads
        the next latents of the wave (`expect`) of the same crosscoder, up to PREFETCH, in the same query."""
        if key in self._examples:
            self._examples.move_to_end(key)
            return self._examples[key]
        ref = parse_key(key)
        chunk = [key]
        at = self._upcoming.get(key)
        if at is not None:
            for k in self._upcoming_keys[at + 1 :]:
                if len(chunk) >= PREFETCH:
                    break
                if k not in self._examples and parse_key(k).crosscoder == ref.crosscoder:
                    chunk.append(k)
        if len(chunk) == 1:
            found = {ref.latent: self.store.examples_for(ref.crosscoder, ref.latent)}
        else:
            found = self.store.examples_for_many(ref.crosscoder, [parse_key(k).latent for k in chunk])
        for k in reversed(chunk):  # the asked key ends up most recent
            self._examples[k] = found[parse_key(k).latent]
            self._examples.move_to_end(k)
        while len(self._examples) > 4 * max(1, self.cfg.agent.concurrency) + PREFETCH:
            self._examples.popitem(last=False)
        return found[ref.latent]

    @property
    def findings_dir(self) -> Path:
        """One JSON file per labelled latent (the findings table), written atomically."""
        return self.run_dir.findings

    def finding_path(self, key: str) -> Path:
        """Where a latent's findings live."""
        return self.run_dir.finding(key)

    def label_path(self, key: str, round_: int = 0) -> Path:
        """A label (of refinement round `round_`) is saved here the moment the judge returns it, and
        its detection score when verified, so a run killed before the latent is recorded reuses them
        instead of judging the latent again."""
        return self.run_dir.label(key, round_)

    def is_finished(self, key: str) -> bool:
        """True if the latent has recorded findings that are final: labelled, or failed for a reason a
        rerun cannot change. A latent whose judging failed (`needs_retry`) is not finished: a rerun labels it."""
        if key in self._finished:
            return True
        path = self.finding_path(key)
        if not path.is_file():
            return False
        found = [Finding(**f) for f in json.loads(path.read_text())]
        if any(needs_retry(f) for f in found):
            return False
        self._finished.add(key)
        return True

    def judging_failed(self, key: str) -> bool:
        """True if the latent's recorded findings are a judge failure (`needs_retry`: a rerun labels it again)."""
        path = self.finding_path(key)
        return path.is_file() and any(needs_retry(Finding(**f)) for f in json.loads(path.read_text()))

    def write_findings(self, key: str, findings: list[Finding]) -> None:
        """Record a latent's findings (one per pair)."""
        atomic_write_json(self.finding_path(key), [f.model_dump(mode="json") for f in findings])
        self._finished.discard(key)

    async def index_findings(self, findings: list[Finding]) -> None:
        """Upsert a latent's findings into the store; returns once they are there.

        Latents recorded while an upsert runs are upserted together in the next one (off the event loop),
        so the store embeds many finding texts per model call instead of one (issue 18: one embedding
        call per latent, on the event loop, was two thirds of the offline label stage).
        """
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        if self._flusher is None or self._flusher.done() or self._flusher.get_loop() is not loop:
            # entries of an earlier event loop (a run interrupted mid-upsert) have no one waiting any more
            self._pending = [(fs, fut) for fs, fut in self._pending if fut.get_loop() is loop]
            self._flusher = loop.create_task(self._flush_findings())
        self._pending.append((findings, done))
        await done

    async def _flush_findings(self) -> None:
        await asyncio.sleep(0)  # let the latents recorded in this turn of the loop join the first batch
        while self._pending:
            batch, self._pending = self._pending, []
            rows = [f for fs, _ in batch for f in fs]
            try:
                await asyncio.to_thread(self.store.upsert_findings, rows, self.vectors())
            except Exception as exc:  # handed to every waiting record node, which fails as it did before
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
            else:
                for _, fut in batch:
                    if not fut.done():
                        fut.set_result(None)


PREFETCH = 16  # latents whose examples one store query reads (AgentContext.examples)
JUDGE_FAILURE = "judge: "  # prefix of a finding's failure when the judge failed (down, errors, junk answers)


def needs_retry(finding: Finding) -> bool:
    """A finding without a label because the judge failed: transient, so a rerun of the label stage
    judges the latent again. Other failures are final (no activating examples in the store, the
    judge-call budget spent): a rerun would only repeat them."""
    return finding.label is None and (finding.failure or "").startswith(JUDGE_FAILURE)


def parse_key(key: str) -> LatentRef:
    """'joint:812' -> LatentRef."""
    crosscoder, latent = key.rsplit(":", 1)
    return LatentRef(crosscoder=crosscoder, latent=int(latent))


def read_findings(run_dir: Path | RunDir) -> list[Finding]:
    """Every recorded finding of a run."""
    out: list[Finding] = []
    for path in RunDir.of(run_dir).finding_files():
        out.extend(read_models(path, Finding, "findings file"))
    return out
