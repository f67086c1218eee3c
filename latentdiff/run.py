"""The stage runner and Python API: one run directory, one stage after another, resumable.

`Run(cfg).run_all()` executes the stages in order (what `latentdiff run` does). In a notebook,
each stage is also a method returning its typed result (latentdiff.results), so stages chain:

    run = Run.from_config("run.yaml")      # or Run.open("runs/NAME") for an existing run
    run.harvest(); run.train(); run.select().sides
    run.latent_stats(side="finetuned"); run.examples("joint:812"); run.report().categories

A stage method runs the stage unless it is up to date (then it only reads the result); the
readers (`result`, `latent_stats`, `examples`, `findings`, ...) never run anything and raise
`StageNotDone` naming the stage when its output is missing. Everything is read from the run
directory on demand; nothing holds the activation cache in memory.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from latentdiff import stages
from latentdiff.config import ModelSpec, RunConfig, dump_config
from latentdiff.errors import LatentDiffError, NotARunDirectory, StageNotAvailable
from latentdiff.results import (
    HarvestResult,
    IndexResult,
    LabelResult,
    SampleResult,
    SelectResult,
    TrainResult,
    read_result,
    require_done,
)
from latentdiff.rundir import RunDir

if TYPE_CHECKING:
    from latentdiff.agent.aggregate import Aggregate
    from latentdiff.agent.report.schema import Report
    from latentdiff.core.crosscoder import CrossCoder
    from latentdiff.core.examples import Example
    from latentdiff.core.select import LatentStats
    from latentdiff.records import Finding, LatentRef

log = logging.getLogger(__name__)

StageStatus = Literal["done", "started", "pending"]


def _alone_from_here(stage: str) -> bool:
    """Under torchrun, before a single-process stage: rank 0 goes on alone, the other ranks stop.

    Every rank leaves the process group (`distributed.leave`); returns False on the ranks that stop.
    Without torchrun (or once left) it returns True and does nothing.
    """
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return True
    from latentdiff.core import distributed as dist

    dist.init_from_env()
    main = dist.is_main()
    dist.leave()
    if not main:
        log.info("rank %d: stage %s and later run on rank 0 alone; this rank is done", dist.rank(), stage)
    return main


def _elapsed(seconds: float) -> str:
    """'42 s', '3 min 05 s'."""
    m, sec = divmod(int(round(seconds)), 60)
    return f"{m} min {sec:02d} s" if m else f"{sec} s"


class Run:
    """A latentdiff run over one run directory."""

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        self.dir = cfg.resolved_run_dir()
        self.rundir = RunDir(self.dir)
        self.show_progress = True

    @classmethod
    def from_config(cls, path: str | Path | None = None, overrides: list[str] | None = None) -> Run:
        """Load a YAML config (with key.sub=value overrides) into a Run."""
        from latentdiff.config import load_config

        return cls(load_config(path, overrides))

    @classmethod
    def open(cls, run_dir: str | Path, overrides: list[str] | None = None) -> Run:
        """Open an existing run directory with the config saved in it (RUN/config.yaml).

        The run's directory is `run_dir` wherever the saved config says it was (runs can move).
        """
        from latentdiff.config import load_config

        d = Path(run_dir)
        if not d.is_dir():
            raise NotARunDirectory(f"{d}: no such run directory")
        if not RunDir(d).config.is_file():
            raise NotARunDirectory(
                f"{d} is not a latentdiff run directory (no config.yaml); "
                "start one with Run.from_config(...) or `latentdiff run CONFIG`"
            )
        cfg = load_config(RunDir(d).config, overrides)
        return cls(cfg.model_copy(update={"run_dir": str(d)}))

    def __repr__(self) -> str:
        done = [s for s, v in self.status().items() if v == "done"]
        return f"Run({self.cfg.name!r}, dir={str(self.dir)!r}, done={done})"

    def stage(self, name: str, fresh: bool = False) -> None:
        """Run one stage (skipped when up to date, unless `fresh`: recompute it with the same settings).

        The new settings are checked first; the run directory's lock is held while the stage runs; a stage
        whose settings changed builds its outputs beside the old ones and swaps them in when done."""
        spec = stages.stage_named(name)
        if not fresh and self._is_done(name):
            log.info("stage %s: up to date, skipped", name)
            return
        for prev in stages.needs(name):
            if not self._is_done(prev):
                raise StageNotAvailable(
                    f"stage '{name}' needs stage '{prev}' done with these settings first "
                    f"(run `latentdiff {prev} CONFIG`, or `latentdiff run CONFIG` for everything)"
                )
        if not spec.distributed and not _alone_from_here(name):
            return
        self._record_new_config()
        stages.validate(self.cfg, [name])  # before anything in the run directory changes
        with self.rundir.lock():
            dump_config(self.cfg, self.rundir.config)  # the settings in use, for Run.open
            rd = stages.begin(self.cfg, self.rundir, name, fresh=fresh)
            spec.run(self.cfg, rd, self.show_progress)

    def _record_new_config(self) -> None:
        """A new run directory records its settings at once (even ones about to fail their checks), so
        Run.open and `config show` see them; an existing one's config.yaml changes only once they pass."""
        if not self.rundir.config.is_file() and int(os.environ.get("RANK", "0")) == 0:
            dump_config(self.cfg, self.rundir.config)

    def _is_done(self, name: str) -> bool:
        return stages.is_done(self.cfg, self.rundir, name)

    def run_all(self, from_stage: str | None = None) -> bool:
        """Run every stage in order; finished stages are skipped unless at or after `from_stage`.

        Under torchrun, harvest and train use every rank and rank 0 alone runs the rest: returns
        False on the other ranks (they stop after training), True where the pipeline was finished.
        """
        names = stages.STAGE_NAMES
        fresh = set(names[names.index(stages.stage_named(from_stage).name):]) if from_stage is not None else set()
        # every stage that will run is checked before anything in the run directory changes
        self._record_new_config()
        stages.validate(self.cfg, [n for n in names if n in fresh or not self._is_done(n)])
        t_all = time.perf_counter()
        with self.rundir.lock():
            dump_config(self.cfg, self.rundir.config)
            for i, spec in enumerate(stages.STAGES, 1):
                if not spec.distributed and not _alone_from_here(spec.name):
                    return False  # under torchrun: rank 0 runs the rest
                t0 = time.perf_counter()
                log.info("stage %d/%d %s", i, len(stages.STAGES), spec.name)
                self.stage(spec.name, fresh=spec.name in fresh)
                log.info("stage %d/%d %s: %s", i, len(stages.STAGES), spec.name, _elapsed(time.perf_counter() - t0))
        log.info("all %d stages done in %s: %s", len(stages.STAGES), _elapsed(time.perf_counter() - t_all),
                 self.rundir.root)
        return True

    def status(self) -> dict[str, StageStatus]:
        """Stage -> 'done' (with these settings), 'started' (partial output kept) or 'pending'."""
        out: dict[str, StageStatus] = {}
        for name in stages.STAGE_NAMES:
            started = self.rundir.started_marker(name).is_file()
            out[name] = "done" if self._is_done(name) else "started" if started else "pending"
        return out

    # ------------------------------------------------------------------ stages with typed results

    def harvest(self) -> HarvestResult:
        """Run the harvest stage (skipped when up to date); return the activation caches it wrote."""
        self.stage("harvest")
        return self.result("harvest")  # type: ignore[return-value]

    def train(self) -> TrainResult:
        """Run the train stage (skipped when up to date); return the crosscoders with final metrics."""
        self.stage("train")
        return self.result("train")  # type: ignore[return-value]

    def select(self) -> SelectResult:
        """Run the select stage (skipped when up to date); return the side counts per pair."""
        self.stage("select")
        return self.result("select")  # type: ignore[return-value]

    def sample(self) -> SampleResult:
        """Run the sample stage (skipped when up to date); return the example counts."""
        self.stage("sample")
        return self.result("sample")  # type: ignore[return-value]

    def index(self) -> IndexResult:
        """Run the index stage (skipped when up to date); return what went into the store."""
        self.stage("index")
        return self.result("index")  # type: ignore[return-value]

    def label(self) -> LabelResult:
        """Run the label stage (skipped when up to date); return the agent's counts."""
        self.stage("label")
        return self.result("label")  # type: ignore[return-value]

    def aggregate(self) -> Aggregate:
        """Run the aggregate stage (skipped when up to date); return the `Aggregate` record."""
        self.stage("aggregate")
        return self.aggregate_result()

    def report(self) -> Report:
        """Run the report stage (skipped when up to date); return the `Report` record (report.json)."""
        self.stage("report")
        return self.report_result()

    # ------------------------------------------------------------------ readers (never run a stage)

    def result(self, name: str) -> Any:
        """The typed result of a done stage, without running anything (StageNotDone otherwise)."""
        return read_result(self.cfg, self.rundir, name)

    def aggregate_result(self) -> Aggregate:
        """aggregate.json as the typed `Aggregate` (per-category shifts with CIs)."""
        return read_result(self.cfg, self.rundir, "aggregate")  # type: ignore[return-value]

    def report_result(self) -> Report:
        """report.json as the typed `Report`."""
        return read_result(self.cfg, self.rundir, "report")  # type: ignore[return-value]

    def latent_stats(
        self, crosscoder: str | None = None, pair: str | None = None, side: str | None = None
    ) -> list[LatentStats]:
        """Rows of latents.parquet (one per latent and pair), optionally filtered."""
        from latentdiff.core.select import read_table

        require_done(self.cfg, self.rundir, "select")
        return [
            r
            for r in read_table(self.rundir.latents)
            if (crosscoder is None or r.crosscoder == crosscoder)
            and (pair is None or r.pair == pair)
            and (side is None or r.side == side)
        ]

    def examples(self, key: str | LatentRef, kind: str | None = None) -> list[Example]:
        """The sampled example windows of one latent, e.g. run.examples('joint:812') (streamed from disk)."""
        from latentdiff.core.examples import read_examples

        ref = self._ref(key)
        require_done(self.cfg, self.rundir, "sample")
        path = self.rundir.examples(ref.crosscoder)
        return [e for e in read_examples(path) if e.latent == ref.latent and (kind is None or e.kind == kind)]

    def findings(self, pair: str | None = None) -> list[Finding]:
        """The labelled latents (one `Finding` per latent and pair it is specific to)."""
        from latentdiff.agent.state import read_findings

        require_done(self.cfg, self.rundir, "label")
        return [f for f in read_findings(self.rundir) if pair is None or f.pair == pair]

    def crosscoder(self, name: str | None = None, device: str = "cpu") -> CrossCoder:
        """A trained crosscoder module (name may be omitted when the run has only one)."""
        from latentdiff.core.crosscoder import CrossCoder

        return CrossCoder.from_pretrained(self.rundir.crosscoder(self._crosscoder_name(name)), device=device)

    def training_metrics(self, name: str | None = None) -> list[dict[str, float]]:
        """A crosscoder's training curve: the rows of metrics.jsonl (step, loss, FVU per model, L0, ...)."""
        path = self.rundir.training_metrics(self._crosscoder_name(name))
        return [json.loads(line) for line in path.read_text().splitlines() if line]

    def _crosscoder_name(self, name: str | None) -> str:
        require_done(self.cfg, self.rundir, "train")
        names = list(stages.crosscoder_plan(self.cfg))
        if name is None and len(names) == 1:
            name = names[0]
        if name not in names:
            raise LatentDiffError(f"crosscoder {name!r} is not part of this run; crosscoders: {', '.join(names)}")
        return name

    def _ref(self, key: str | LatentRef) -> LatentRef:
        from latentdiff.records import LatentRef

        if isinstance(key, LatentRef):
            ref = key
        else:
            head, _, tail = str(key).rpartition(":")
            if not head or not tail.isdigit():
                raise LatentDiffError(f"latent key must look like CROSSCODER:ID (e.g. 'joint:812'), got {key!r}")
            ref = LatentRef(crosscoder=head, latent=int(tail))
        names = list(stages.crosscoder_plan(self.cfg))
        if ref.crosscoder not in names:
            raise LatentDiffError(
                f"crosscoder {ref.crosscoder!r} is not part of this run; crosscoders: {', '.join(names)}"
            )
        return ref


def demo_config(out: Path) -> RunConfig:
    """The offline demo: the paper's three-model design on the shipped organisms, null as control.

    One joint crosscoder over base, it, shift and null; each is compared with base, and the
    headline is shift-specific vs it-specific latents (the paper's SimPO-vs-instruct table).
    """
    from latentdiff.config import CrosscoderConfig, DataConfig

    return RunConfig(
        name="demo",
        run_dir=str(out),
        models=[
            ModelSpec(name="base", path="organism:base", role="base"),
            ModelSpec(name="it", path="organism:it", role="finetune"),
            ModelSpec(name="shift", path="organism:shift", role="finetune"),
            ModelSpec(name="null", path="organism:null", role="control"),
        ],
        design="joint",
        headline=("shift", "it"),
        data=DataConfig(n_tokens=400_000, n_heldout_tokens=100_000, ctx_len=128),
        crosscoder=CrosscoderConfig(dict_size=2048, k=32, batch_size=1024, steps=1500, warmup_steps=100,
                                    dead_tokens=200_000, checkpoint_every=250),
    )
