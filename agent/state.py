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
    _examples: OrderedDict[str, list[Any]] = field(default_factory=OrderedDict, repr=False)
    _finished: set[str] = field(default_factory=set, repr=False)  # keys known finished (never un-finish)
    _progress: Any = field(default=None, repr=False)  # LineProgress of the recorded latents

    def __post_init__(self) -> None:
        self.run_dir = RunDir.of(self.run_dir)

    def recorded(self) -> None:
        """One latent recorded: a progress line (count, ETA, judge calls) at most every 30 s."""
        from latentdiff.progress import LineProgress

        if self._progress is None:
            limit = self.cfg.agent.max_latents
            total = min(len(self.stats), limit) if limit else len(self.stats)
            self._progress = LineProgress(every_s=30.0)
            self._progress.add_task("label (latents recorded)", total=total, info="")
        self._progress.update(0, advance=1, info=f"{self.budget.used} judge calls")

    def examples(self, key: str) -> list[Any]:
        """A latent's stored examples (read from the store once per latent; a small LRU)."""
        if key in self._examples:
            self._examples.move_to_end(key)
            return self._examples[key]
        ref = parse_key(key)
        found = self.store.examples_for(ref.crosscoder, ref.latent)
        self._examples[key] = found
        while len(self._examples) > 4 * max(1, self.cfg.agent.concurrency):
            self._examples.popitem(last=False)
        return found

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
