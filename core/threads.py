"""How many CPU threads a training loop uses, chosen by measuring it (issue 18, a shared machine).

torch runs each large CPU kernel on all of its threads and waits at the end for the slowest one. When
another busy process shares the cores, one of those threads is often off its core, and every kernel
waits for it: on the 2-core reference machine the crosscoder step took 110-150 ms with 2 threads beside
one busy process, against 68 ms with 1 thread (and 40 ms with 2 threads on idle cores;
docs/benchmarks.md, "Speed (issue 18, session 9)"). No fixed setting is right for both machines, and a
machine's load changes while a long job runs, so `ThreadGovernor` times the loop's own steps: it keeps
the current thread count, now and then runs a few steps with one thread fewer (or more, up to the
start count), and switches when that is clearly faster. A probe that loses doubles the wait before the
next one, so on a steady machine probing costs about 1% of the steps.

The choice changes only speed: the training step gives bit-identical weights with any thread count
(`tests/test_train.py` checks it on shapes where every kernel runs in parallel), so a run's results do
not depend on its machine's load.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Callable

import torch

log = logging.getLogger(__name__)


class ThreadGovernor:
    """Per-step thread count for a loop of similar steps: call `before()` then `after(seconds)` per step.

    States: `warm` (the first steps: allocation, first-touch), `base` (time `window` steps at the
    current count), `probe` (one settling step, then `window` timed steps at a neighbouring count),
    `run` (`period` steps at the chosen count). A probe wins when its median step time is below
    `margin` times the current count's; the current count is timed again before every probe, so
    both medians come from the same stretch of load.
    """

    def __init__(
        self,
        max_threads: int,
        *,
        warmup: int = 3,
        window: int = 5,
        period: int = 50,
        max_period: int = 800,
        margin: float = 0.9,
        set_threads: Callable[[int], None] = torch.set_num_threads,
    ) -> None:
        if max_threads < 1:
            raise ValueError(f"{max_threads=} must be >= 1")
        self.max_threads, self.current = max_threads, max_threads
        self.window, self.min_period, self.max_period, self.margin = window, period, max_period, margin
        self.period = period
        self._set = set_threads
        self.state, self._left = "warm", warmup
        self._times: list[float] = []
        self._base = 0.0
        self._candidate: int | None = None
        self._direction = -1  # the first probe tries one thread fewer
        self.switches: list[tuple[int, int, float, float]] = []  # (from, to, from's ms, to's ms)

    @property
    def active(self) -> bool:
        """More than one count to choose from."""
        return self.max_threads > 1

    def _neighbour(self) -> int | None:
        """The count to probe next: alternately one fewer and one more, within [1, max_threads]."""
        for d in (self._direction, -self._direction):
            n = self.current + d
            if 1 <= n <= self.max_threads:
                self._direction = -d
                return n
        return None

    def before(self) -> None:
        """Set the thread count of the coming step (only when it changes)."""
        if self.state == "probe" and self._left == self.window + 1 and self._candidate is not None:
            self._set(self._candidate)

    def after(self, seconds: float) -> None:
        """Record the step that just ran and move the state machine on."""
        if not self.active:
            return
        self._left -= 1
        if self.state in ("base", "probe") and self._left < self.window:
            self._times.append(seconds)  # the probe's first step settles the new count untimed
        if self._left > 0:
            return
        if self.state in ("warm", "run"):
            self.state, self._left, self._times = "base", self.window, []
        elif self.state == "base":
            self._base = statistics.median(self._times)
            self._candidate = self._neighbour()
            self.state, self._left, self._times = "probe", self.window + 1, []
            if self._candidate is None:
                self.state, self._left = "run", self.period
        else:  # a probe ended
            probe, cand = statistics.median(self._times), self._candidate
            assert cand is not None, f"{self.state=} without a candidate"
            if probe < self.margin * self._base:
                log.info("training on %d CPU thread(s): %.0f ms a step, against %.0f ms with %d",
                         cand, 1e3 * probe, 1e3 * self._base, self.current)
                self.switches.append((self.current, cand, 1e3 * self._base, 1e3 * probe))
                self.current, self.period = cand, self.min_period
                self._direction = cand - self.switches[-1][0]  # keep going the way that paid off
            else:
                self._set(self.current)
                self.period = min(2 * self.period, self.max_period)
            self.state, self._left, self._times = "run", self.period, []
