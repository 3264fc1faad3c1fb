"""One progress vocabulary for every long step: a bar on a terminal, plain periodic lines otherwise.

A 40-minute spectrum or a half-hour evaluation written to a log must still say how far it is: when stderr is
not a terminal, `Progress` prints `desc: i/N unit (p%), elapsed, ~left` at most every `interval_s` seconds and
once at the end. On a terminal it drives a tqdm bar that disappears when done.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import IO, Any

DEFAULT_INTERVAL_S = 30.0


def format_duration(seconds: float) -> str:
    """`42 s`, `3 min 05 s`, `1 h 02 min`: short, for progress lines and time-left estimates."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class Progress:
    """Report `done` of `total` units of one step.

    Args:
        desc: What is being done (`spectrum`, `evaluate`, `study`).
        total: Units in all, when known (can be given later to `update`).
        unit: The unit's name in plain lines (`matrix`, `example`, `run`).
        quiet: Print nothing.
        interval_s: Least seconds between two plain lines.
        stream: Where to write (stderr by default).
        terminal: Force the bar (True) or the plain lines (False); default: whether `stream` is a terminal.
    """

    def __init__(
        self,
        desc: str,
        total: int | None = None,
        unit: str = "item",
        quiet: bool = False,
        interval_s: float = DEFAULT_INTERVAL_S,
        stream: IO[str] | None = None,
        terminal: bool | None = None,
    ) -> None:
        self.desc, self.total, self.unit, self.quiet = desc, total, unit, quiet
        self.interval_s = interval_s
        self.stream = stream if stream is not None else sys.stderr
        self.terminal = self.stream.isatty() if terminal is None else terminal
        self.done = 0
        self.started = time.monotonic()
        self._last_line = self.started
        self._bar: Any = None
        if not quiet and self.terminal:
            from tqdm import tqdm

            self._bar = tqdm(desc=desc, total=total, unit=unit, file=self.stream, leave=False)

    def update(self, done: int, total: int | None = None, note: str = "") -> None:
        """Record that `done` units are finished (absolute count, not an increment)."""
        if total is not None:
            self.total = total
        self.done = done
        if self.quiet:
            return
        if self._bar is not None:
            self._bar.total = self.total
            if note:
                self._bar.set_postfix_str(note[-40:], refresh=False)
            self._bar.update(done - self._bar.n)
            return
        now = time.monotonic()
        if now - self._last_line >= self.interval_s or (self.total is not None and done >= self.total):
            self._last_line = now
            self.stream.write(self.line(note) + "\n")
            self.stream.flush()

    def hook(self, done: int, total: int, name: str) -> None:
        """`update` with the (done, total, name) signature of the spectrum engine's progress hook."""
        self.update(done, total, name)

    def line(self, note: str = "") -> str:
        """`desc: i/N unit (p%), elapsed, ~left` (the parts that are known)."""
        elapsed = time.monotonic() - self.started
        count = f"{self.done}/{self.total}" if self.total else f"{self.done}"
        text = f"{self.desc}: {count} {self.unit}"
        if self.total:
            text += f" ({100 * self.done / self.total:.0f}%)"
        text += f", {format_duration(elapsed)} elapsed"
        if self.total and 0 < self.done < self.total:
            text += f", ~{format_duration(elapsed / self.done * (self.total - self.done))} left"
        return f"{text} ({note})" if note else text

    def close(self) -> None:
        """Remove the bar (plain lines need no closing)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()
