"""The study's own console lines: `run i/N <name>: <what>` with the time left, estimated from the median
seconds of the runs finished in this session (`deltarank.io.progress.format_duration`)."""

from __future__ import annotations

import statistics
import time

from deltarank.io.progress import format_duration


class RunCounter:
    """Counts the study's runs and times the ones this session trains or measures.

    Args:
        total: The study's runs.
    """

    def __init__(self, total: int) -> None:
        self.total = total
        self.index = 0
        self.seconds: list[float] = []
        self.to_do = 0
        self._started: float | None = None

    def line(self, name: str, what: str, runs_left: int) -> str:
        """`run i/N name: what (~T left)`; `runs_left` counts this run and the runs after it still to work on."""
        self.index += 1
        text = f"run {self.index}/{self.total} {name}: {what}"
        if runs_left and self.seconds:
            text += f" (~{format_duration(statistics.median(self.seconds) * runs_left)} left)"
        elif runs_left:
            text += " (time left: known when a run has finished)"
        return text

    def start(self) -> None:
        """A chunk of runs starts working."""
        self._started = time.monotonic()

    def finished(self, runs: int) -> None:
        """The chunk started by `start` finished `runs` runs (in parallel: each is given an equal share)."""
        if self._started is not None and runs:
            share = (time.monotonic() - self._started) / runs
            self.seconds += [share] * runs
        self._started = None
