"""The stage runner: one run directory, one stage after another, each resumable and skippable.

`Run(cfg).run_all()` executes the stages in order. A stage whose implementation is not part of
this version raises `StageNotAvailable` naming the stage, rather than pretending to succeed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from latentdiff.config import ModelSpec, RunConfig, dump_config
from latentdiff.errors import StageNotAvailable

log = logging.getLogger(__name__)

STAGES: tuple[str, ...] = (
    "harvest",
    "train",
    "select",
    "sample",
    "index",
    "label",
    "aggregate",
    "report",
)
class Run:
    """A latentdiff run over one run directory."""

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        self.dir = cfg.resolved_run_dir()
        self.show_progress = True
        from latentdiff import stages

        self._impl: dict[str, Callable[[], None]] = {
            "harvest": lambda: stages.run_harvest(cfg, self.dir, self.show_progress),
            "train": lambda: stages.run_train(cfg, self.dir, self.show_progress),
            "select": lambda: stages.run_select(cfg, self.dir, self.show_progress),
            "sample": lambda: stages.run_sample(cfg, self.dir, self.show_progress),
            "index": lambda: stages.run_index(cfg, self.dir, self.show_progress),
            "label": lambda: stages.run_label(cfg, self.dir, self.show_progress),
            "aggregate": lambda: stages.run_aggregate(cfg, self.dir, self.show_progress),
            "report": lambda: stages.run_report(cfg, self.dir, self.show_progress),
        }

    @classmethod
    def from_config(cls, path: str | Path | None = None, overrides: list[str] | None = None) -> Run:
        """Load a YAML config (with key.sub=value overrides) into a Run."""
        from latentdiff.config import load_config

        return cls(load_config(path, overrides))

    def stage(self, name: str) -> None:
        """Run one stage."""
        if name not in STAGES:
            raise StageNotAvailable(f"unknown stage {name!r}; stages: {', '.join(STAGES)}")
        if self._is_done(name):
            log.info("stage %s: up to date, skipped", name)
            return
        prev = STAGES[STAGES.index(name) - 1] if STAGES.index(name) > 0 else None
        if prev is not None and not self._is_done(prev):
            raise StageNotAvailable(
                f"stage '{name}' needs stage '{prev}' done with these settings first "
                f"(run `latentdiff {prev} CONFIG`, or `latentdiff run CONFIG` for everything)"
            )
        self.dir.mkdir(parents=True, exist_ok=True)
        from latentdiff import stages

        stages.begin(self.cfg, self.dir, name)
        self._impl[name]()

    def _is_done(self, name: str) -> bool:
        from latentdiff import stages

        return stages.is_done(self.cfg, self.dir, name)

    def run_all(self, from_stage: str | None = None) -> None:
        """Run every stage in order; finished stages are skipped unless at or after `from_stage`."""
        from latentdiff import stages

        if from_stage is not None:
            if from_stage not in STAGES:
                raise StageNotAvailable(f"unknown stage {from_stage!r}; stages: {', '.join(STAGES)}")
            for name in STAGES[STAGES.index(from_stage) :]:
                stages.invalidate(self.dir, name)
        self.dir.mkdir(parents=True, exist_ok=True)
        dump_config(self.cfg, self.dir / "config.yaml")
        for name in STAGES:
            log.info("stage %s", name)
            self.stage(name)


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
