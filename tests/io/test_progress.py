"""The one progress vocabulary: plain periodic lines when stderr is not a terminal."""

from __future__ import annotations

import io

from deltarank.io.progress import Progress, format_duration


def test_plain_lines_name_the_count_and_the_end() -> None:
    stream = io.StringIO()
    with Progress("evaluate", total=4, unit="example", stream=stream, interval_s=0.0) as progress:
        for done in range(1, 5):
            progress.update(done)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 4
    assert lines[0].startswith("evaluate: 1/4 example (25%), ")
    assert "left" in lines[0]
    assert lines[-1].startswith("evaluate: 4/4 example (100%), ")
    assert "left" not in lines[-1]


def test_plain_lines_are_spaced_by_the_interval_but_the_last_is_always_printed() -> None:
    stream = io.StringIO()
    progress = Progress("spectrum", total=100, unit="matrix", stream=stream, interval_s=3600.0)
    for done in range(1, 101):
        progress.hook(done, 100, f"layer.{done}")
    assert stream.getvalue().splitlines() == [progress.line("layer.100")]


def test_quiet_prints_nothing() -> None:
    stream = io.StringIO()
    progress = Progress("study", total=2, unit="run", stream=stream, quiet=True, interval_s=0.0)
    progress.update(2)
    assert stream.getvalue() == ""


def test_durations_are_short() -> None:
    assert format_duration(42.4) == "42 s"
    assert format_duration(185) == "3 min 05 s"
    assert format_duration(3720) == "1 h 02 min"
