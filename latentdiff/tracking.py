"""Experiment logging (config section `log`): scalars to TensorBoard and Weights & Biases.

One `MetricsLogger` is one TensorBoard run (a directory of event files) and/or one W&B run. The stage
runners open one per crosscoder they train (TensorBoard run `train/NAME`, tags `train/loss`,
`train/fvu_MODEL`, ...: every row of its metrics.jsonl) and one for labelling (`label`, tags
`label/latents_labelled`, `label/judge_calls`, ...: after each wave), and close it when done. With
both backends off it does nothing and imports nothing.

Resume: the first step a logger writes purges, in TensorBoard, what a killed earlier process logged
at that step or later (`SummaryWriter(purge_step=...)`), so a resumed stage's re-logged steps replace
the old ones instead of doubling them. A W&B run is one process: a resumed stage starts a new W&B run.

A ground module like latentdiff/rundir.py (the standard library and latentdiff.errors only; the
backends are imported when enabled): core/ and agent/ log through it, and it takes directories and
plain values, never a RunDir or the run config.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from latentdiff.errors import ConfigError

log = logging.getLogger(__name__)

FLUSH_SECS = 30  # TensorBoard: events reach the file at least this often (and on close)


def require(package: str, key: str) -> None:
    """Import `package` (a backend of `key`, e.g. 'log.tensorboard'), else a one-line ConfigError naming the extra."""
    try:
        __import__(package)
    except ImportError:
        raise ConfigError(f"{key} needs the {package} package: pip install 'latentdiff[{package}]'") from None


@dataclass(frozen=True)
class WandbSettings:
    """What `wandb.init` is given: one W&B run."""

    project: str
    mode: str  # 'offline' | 'online' | 'disabled'
    dir: Path  # W&B writes under dir/wandb/
    name: str
    group: str | None = None
    config: dict[str, Any] = field(default_factory=dict)


class MetricsLogger:
    """Scalars to a TensorBoard run directory and/or a W&B run; a no-op with neither.

    `log(scalars, step, prefix)` writes `prefix/key` for every finite number in `scalars`. Use it as a
    context manager (or call `close`).
    """

    def __init__(self, tensorboard_dir: str | Path | None = None, wandb: WandbSettings | None = None) -> None:
        self.tensorboard_dir = Path(tensorboard_dir) if tensorboard_dir is not None else None
        self._writer: Any = None  # SummaryWriter, opened at the first log (purge_step = that step)
        self._run: Any = None
        if self.tensorboard_dir is not None:
            require("tensorboard", "log.tensorboard")
        if wandb is not None:
            self._run = _wandb_init(wandb)

    @property
    def enabled(self) -> bool:
        """True when some backend receives the scalars."""
        return self.tensorboard_dir is not None or self._run is not None

    def log(self, scalars: dict[str, float], step: int, prefix: str) -> None:
        """Log `prefix/key` = value at `step` for each finite number of `scalars` (others are left out)."""
        if not self.enabled:
            return
        values = {f"{prefix}/{k}": float(v) for k, v in scalars.items()
                  if isinstance(v, int | float) and math.isfinite(v)}
        if self.tensorboard_dir is not None:
            if self._writer is None:
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(str(self.tensorboard_dir), purge_step=step, flush_secs=FLUSH_SECS)
            for tag, value in values.items():
                self._writer.add_scalar(tag, value, step)
        if self._run is not None:
            self._run.log(values, step=step)

    def close(self) -> None:
        """Flush and close the backends (idempotent)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._run is not None:
            self._run.finish()
            self._run = None

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def _wandb_init(s: WandbSettings) -> Any:
    require("wandb", "log.wandb")
    import wandb

    s.dir.mkdir(parents=True, exist_ok=True)
    # console='off': W&B does not capture the terminal (progress bars); no system-metrics sampler, no code/git
    wanted = {"console": "off", "quiet": True, "x_disable_stats": True, "x_disable_machine_info": True,
              "disable_git": True, "save_code": False}
    known = getattr(wandb.Settings, "model_fields", None)  # pydantic Settings (wandb >= 0.19): the keys it has
    settings = wandb.Settings(**{k: v for k, v in wanted.items() if k in known}) if known else None
    run = wandb.init(project=s.project, mode=s.mode, dir=str(s.dir), name=s.name, group=s.group, config=s.config,
                     settings=settings)
    log.info("W&B run %s (%s) in %s", s.name, s.mode, s.dir)
    return run
