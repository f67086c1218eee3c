"""Progress for long stages: a rich bar on a terminal, periodic one-line log updates elsewhere.

rich draws nothing while output goes to a file or a pipe (CI logs, `nohup`, a notebook's captured
stderr), so a long stage looked dead for minutes. `progress(...)` returns rich's `Progress` on a
terminal and a `LineProgress` otherwise: the same `add_task` / `update` / `advance` calls, logged as
`train: 1,200/4,000 (30%), 2 min 05 s elapsed, ETA 4 min 52 s, FVU ...` at most every `every_s`
seconds and once at the end. Ground module: core/, agent/ and store/ may import it.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any

log = logging.getLogger("latentdiff.progress")


def _fmt(seconds: float) -> str:
    m, s = divmod(int(round(max(seconds, 0.0))), 60)
    return f"{m} min {s:02d} s" if m else f"{s} s"


class _Task:
    def __init__(self, description: str, total: float | None, completed: float, fields: dict[str, Any]) -> None:
        self.description, self.total, self.completed, self.fields = description, total, completed, fields
        self.start_completed = completed
        self.t0 = time.perf_counter()
        self.last = 0.0


class LineProgress:
    """rich.progress.Progress's calls, reported as log lines every `every_s` seconds (no terminal needed)."""

    def __init__(self, every_s: float = 30.0, disable: bool = False) -> None:
        self.every_s = every_s
        self.disable = disable
        self.tasks: dict[int, _Task] = {}

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        for tid in list(self.tasks):
            self._emit(tid, final=True)

    def add_task(self, description: str, total: float | None = None, completed: float = 0, **fields: Any) -> int:
        tid = len(self.tasks)
        self.tasks[tid] = _Task(description, total, completed, fields)
        return tid

    def update(self, task: int, advance: float | None = None, completed: float | None = None,
               total: float | None = None, **fields: Any) -> None:
        t = self.tasks[task]
        if completed is not None:
            t.completed = completed
        if advance is not None:
            t.completed += advance
        if total is not None:
            t.total = total
        t.fields.update(fields)
        if time.perf_counter() - t.last >= self.every_s:
            self._emit(task)

    def advance(self, task: int, advance: float = 1) -> None:
        self.update(task, advance=advance)

    def _emit(self, task: int, final: bool = False) -> None:
        t = self.tasks[task]
        now = time.perf_counter()
        t.last = now
        if self.disable:
            return
        elapsed = now - t.t0
        done = t.completed - t.start_completed
        text = f"{t.description}: {t.completed:,.0f}"
        if t.total:
            text += f"/{t.total:,.0f} ({100 * t.completed / t.total:.0f}%)"
        text += f", {_fmt(elapsed)} elapsed"
        if t.total and done > 0 and not final and t.completed < t.total:
            text += f", ETA {_fmt(elapsed / done * (t.total - t.completed))}"
        extra = " ".join(str(v) for v in t.fields.values() if v not in ("", None))
        log.info("%s%s%s", text, f", {extra}" if extra else "", " (done)" if final else "")


def interactive() -> bool:
    """True when stderr is a terminal (rich can draw live bars); LATENTDIFF_PROGRESS=lines forces log lines."""
    if os.environ.get("LATENTDIFF_PROGRESS") == "lines":
        return False
    return sys.stderr.isatty()


def progress(*columns: Any, disable: bool = False, every_s: float = 30.0) -> Any:
    """A rich `Progress` with these columns on a terminal, else a `LineProgress` (one log line per `every_s`)."""
    if interactive():
        from rich.progress import Progress

        return Progress(*columns, disable=disable)
    return LineProgress(every_s=every_s, disable=disable)
