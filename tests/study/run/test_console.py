"""The study's run lines: `run i/N <name>: <what>` with the time left from the median of the finished runs."""

from __future__ import annotations

import pytest

from deltarank.study.run import console
from deltarank.study.run.console import RunCounter


def test_run_lines_count_the_runs_and_estimate_the_time_left(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [0.0]
    monkeypatch.setattr(console.time, "monotonic", lambda: now[0])
    counter = RunCounter(5)
    assert counter.line("a", "done already, skipping", 0) == "run 1/5 a: done already, skipping"
    assert (
        counter.line("b", "training", 4) == "run 2/5 b: training (time left: known when a run has finished)"
    )
    counter.start()
    now[0] = 100.0
    counter.finished(1)  # 100 s
    assert counter.line("c", "training", 3) == "run 3/5 c: training (~5 min 00 s left)"
    counter.start()
    now[0] = 400.0
    counter.finished(1)  # 300 s: the median of 100 and 300 is 200
    assert (
        counter.line("d", "resuming from step 2", 2) == "run 4/5 d: resuming from step 2 (~6 min 40 s left)"
    )
    counter.start()
    now[0] = 460.0
    counter.finished(2)  # two runs side by side in 60 s: 30 s each
    assert counter.seconds == [100.0, 300.0, 30.0, 30.0]
    assert counter.line("e", "measuring", 1) == "run 5/5 e: measuring (~1 min 05 s left)"
