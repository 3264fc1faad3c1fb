"""Figure 4: rank across training. Median r₀.₉ per module type against step (or tokens), one line per run, in a
band of the layers' interquartile range, with the Gaussian r₀.₉ of the module's shape (what a ΔW without
structure would give) as the grey reference.

The input is a series of results of checkpoints. A result's step is the N of `checkpoint-<N>` in its tuned
path; results with the same label (given, or derived from the run directory) form one run's line. A final
model (no `checkpoint-<N>` in its path) is placed at the last step of its run — the last `step` of the
run's `train_log.jsonl` (or `steps` in its `run.json`) when there is one, else its latest checkpoint — drawn as an open marker, and it
replaces a checkpoint at that same step. Tokens come from `train_log.jsonl` (see `runs.tokens_at`).

The same figure from a run trained with `--track-rank N`, without checkpoints: its `train_log.jsonl` (or the run
directory) holds rank lines (`deltarank.train.rank_tracking`), read by `read_tracked_ranks`; each run is one
line of its median r₀.₉ per module type, and its median noise-floor rank is the dashed line of the same colour.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from deltarank.analysis.results import SpectrumResult
from deltarank.analysis.results.extract import RESULT_FILE
from deltarank.errors import DeltarankError, InputError
from deltarank.figures.panels import grid_shape, log_rank_axis, lora_rank_line, module_grid, place_legend
from deltarank.figures.runs import (
    TRAIN_LOG,
    Run,
    as_runs,
    layer_quartiles,
    lora_rank_by_module,
    module_order,
    tokens_at,
)
from deltarank.figures.style import GAUSSIAN_LABEL, REFERENCE_STYLE, paper_style, run_color, run_marker
from deltarank.io.run_directory import RUN_RECORD, read_train_log

PANEL_HEIGHT_IN = 1.45
BAND_ALPHA = 0.18  # the layers' interquartile band behind a run's median line
BAND_LABEL = "layers' interquartile range"
X_AXES = ("step", "tokens")


@dataclass(frozen=True)
class Point:
    """One checkpoint on the training axis."""

    run: Run
    x: float
    final: bool


def training_series(runs: Sequence[Run], x_axis: str = "step") -> dict[str, list[Point]]:
    """Checkpoints grouped by run label and sorted along `x_axis` (step or tokens).

    Raises:
        DeltarankError: a run has no step at all, or tokens were asked for and a log is missing.
    """
    if x_axis not in X_AXES:
        raise DeltarankError(f"unknown x axis {x_axis!r}; choose step or tokens")
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.label, []).append(run)
    series: dict[str, list[Point]] = {}
    for label, members in groups.items():
        by_step: dict[int, Point] = {}
        for run in sorted(members, key=lambda r: float("inf") if r.step is None else r.step):  # final last
            final = run.step is None
            placed = _place_final(run, members) if final else run
            if x_axis == "tokens" and placed.tokens is None:
                raise DeltarankError(
                    f"{run.result.tuned}: no token count; put a {TRAIN_LOG} with 'step' and "
                    "'tokens' in the run directory, or plot against step"
                )
            assert placed.step is not None
            value = placed.step if x_axis == "step" else placed.tokens
            by_step[placed.step] = Point(run=placed, x=float(value or 0), final=final)
        series[label] = [by_step[k] for k in sorted(by_step)]
    return series


def _place_final(run: Run, members: Sequence[Run]) -> Run:
    """Give a final model the last step of its run (from the train log, else its latest checkpoint)."""
    steps = [m.step for m in members if m.step is not None]
    logged = _last_logged_step(Path(run.result.tuned))
    candidates = [s for s in [*steps, logged] if s is not None]
    if not candidates:
        raise DeltarankError(
            f"{run.result.tuned}: cannot place this model on the training axis (no "
            f"checkpoint-<N> in its path, no other checkpoint of run {run.label!r}, no {TRAIN_LOG})"
        )
    step = max(candidates)
    return replace(run, step=step, tokens=tokens_at(run.result.tuned, step))


def _last_logged_step(directory: Path) -> int | None:
    """The final step of a run directory: the largest `step` in its train log, else `steps` in run.json."""
    log = directory / TRAIN_LOG
    steps = []
    if log.is_file():
        for line in log.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and isinstance(record.get("step"), int | float):
                steps.append(int(record["step"]))
    if not steps and (directory / RUN_RECORD).is_file():
        try:
            record = json.loads((directory / RUN_RECORD).read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            record = None
        if isinstance(record, dict) and isinstance(record.get("steps"), int):
            steps.append(record["steps"])
    return max(steps) if steps else None


def can_plot_training(runs: Sequence[Run]) -> bool:
    """True when some run label has two or more checkpoints with a step (a line, not a point)."""
    counts: dict[str, int] = {}
    for run in runs:
        if run.step is not None:
            counts[run.label] = counts.get(run.label, 0) + 1
    return any(count >= 2 for count in counts.values())


def plot_rank_over_training(
    results: SpectrumResult | Sequence[SpectrumResult] | Sequence[Run],
    labels: Sequence[str] | None = None,
    *,
    x_axis: str = "step",
    lora_rank: int | None = None,
    modules: Sequence[str] | None = None,
) -> Figure:
    """Median r₀.₉ per module type against training step or tokens, one line per run.

    Args:
        results: Results of checkpoints (`.../checkpoint-<N>`), of one run or several.
        labels: One per result; results with the same label form one line. Derived from the run directory
            (the path without `checkpoint-<N>`) when omitted.
        x_axis: `step` or `tokens` (tokens need a `train_log.jsonl`).
        lora_rank: LoRA rank r to mark; taken from an adapter result when omitted.
        modules: Module types to draw, in order; all found when omitted.

    Returns:
        The figure, one panel per module type, log-scaled rank axis.
    """
    runs = as_runs(results, labels)
    series = training_series(runs, x_axis)
    names = list(modules) if modules is not None else module_order([r.result for r in runs])
    r_by_module = lora_rank_by_module(runs, lora_rank)
    with paper_style():
        fig, axes, spare = module_grid(names, PANEL_HEIGHT_IN)
        columns = grid_shape(len(names))[1]
        for j, (ax, module) in enumerate(zip(axes, names, strict=True)):
            _draw_panel(ax, series, module)
            lora_rank_line(ax, r_by_module, module)
            _step_axes(ax, x_axis, "median r₀.₉" if j % columns == 0 else None)
        if any(p.final for points in series.values() for p in points):
            final_style: dict[str, Any] = {
                "linestyle": "none",
                "marker": "o",
                "markerfacecolor": "white",
                "color": "black",
            }
            axes[0].plot([], [], label="final model", **final_style)
        axes[0].fill_between([], [], [], color=REFERENCE_STYLE["color"], alpha=BAND_ALPHA, label=BAND_LABEL)
        place_legend(fig, axes, spare)
    return fig


def _step_axes(ax: Axes, x_axis: str, ylabel: str | None) -> None:
    """A steps panel's axes: log rank on y, training step or tokens seen on x, the y label on the first column."""
    log_rank_axis(ax)
    ax.set_xlabel("training step" if x_axis == "step" else "tokens seen")
    if x_axis == "tokens":
        ax.ticklabel_format(axis="x", style="sci", scilimits=(0, 3), useMathText=True)
    if ylabel is not None:
        ax.set_ylabel(ylabel)


def _draw_panel(ax: Axes, series: dict[str, list[Point]], module: str) -> None:
    """One line per run (the median over layers) in a band of the layers' interquartile range; a final model is
    redrawn as an open marker; the Gaussian r₀.₉ of the module's shape as the reference line."""
    nothing = (np.nan, np.nan, np.nan)
    for i, (label, points) in enumerate(series.items()):
        x = np.array([p.x for p in points])
        spread = np.array([layer_quartiles(p.run.result).get(module, nothing) for p in points])
        y = spread[:, 1]
        ax.fill_between(x, spread[:, 0], spread[:, 2], color=run_color(i), alpha=BAND_ALPHA, linewidth=0)
        ax.plot(x, y, color=run_color(i), marker=run_marker(i), markersize=3.5, label=label)
        final = np.array([p.final for p in points])
        if final.any():
            ax.plot(
                x[final],
                y[final],
                linestyle="none",
                marker=run_marker(i),
                markersize=5,
                markerfacecolor="white",
                color=run_color(i),
                zorder=3,
                label="_final",
            )
    reference = [
        m.random_energy_90
        for points in series.values()
        for m in points[0].run.result.matrices
        if m.module == module
    ]
    if reference:
        ax.axhline(float(np.median(reference)), label=GAUSSIAN_LABEL, **REFERENCE_STYLE)


# Fields of a tracked rank line (see `deltarank.train.rank_tracking`): solid and dashed lines of the figure.
TRACKED_RANK = "energy_90_median"
TRACKED_FLOOR = "noise_floor_median"


@dataclass(frozen=True)
class TrackedRun:
    """The rank lines of one run's `train_log.jsonl` (`train --track-rank`), in step order.

    Attributes:
        label: Legend name (the run directory's name unless given).
        steps: Step of each measurement.
        tokens: Tokens seen at each measurement (None where the line has none).
        ranks: Per measurement: module type -> its fields (`energy_90_median`, `noise_floor_median`, ...).
    """

    label: str
    steps: tuple[int, ...]
    tokens: tuple[int | None, ...]
    ranks: tuple[dict[str, dict[str, float]], ...]

    def modules(self) -> list[str]:
        """Module types in first-seen order."""
        return list(dict.fromkeys(m for entry in self.ranks for m in entry))


def is_tracked_log(path: Path) -> bool:
    """True for a `.jsonl` training log, or a run directory holding one (and no extract result)."""
    if path.is_dir():
        return (path / TRAIN_LOG).is_file() and not (path / RESULT_FILE).is_file()
    return path.suffix == ".jsonl"


def read_tracked_ranks(path: Path, label: str | None = None) -> TrackedRun:
    """The rank lines of a training log (or of a run directory's `train_log.jsonl`).

    Lines that are not JSON objects (a run killed mid-write) are skipped; a later line of a step replaces an
    earlier one.

    Raises:
        InputError: the log cannot be read, or holds no rank line (the run was not trained with --track-rank).
    """
    log = path / TRAIN_LOG if path.is_dir() else path
    try:
        entries = read_train_log(log)
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(log, f"cannot read the training log ({exc})") from None
    by_step: dict[int, dict[str, Any]] = {}
    for entry in entries:
        if isinstance(entry.get("rank"), dict) and isinstance(entry.get("step"), int):
            by_step[entry["step"]] = entry
    if not by_step:
        raise InputError(log, "holds no rank lines (train with --track-rank N to record them)")
    entries = [by_step[step] for step in sorted(by_step)]
    directory = log.parent.resolve()
    return TrackedRun(
        label=label or directory.name,
        steps=tuple(sorted(by_step)),
        tokens=tuple(e.get("tokens_seen") for e in entries),
        ranks=tuple(e["rank"] for e in entries),
    )


def plot_tracked_ranks(
    runs: Sequence[TrackedRun], *, x_axis: str = "step", lora_rank: int | None = None
) -> Figure:
    """Median r₀.₉ (solid) and median noise-floor rank (dashed) per module type against step or tokens, one
    colour per run, from `--track-rank` logs.

    Raises:
        DeltarankError: an unknown axis, or tokens asked for and a log line has none.
    """
    if x_axis not in X_AXES:
        raise DeltarankError(f"unknown x axis {x_axis!r}; choose step or tokens")
    if x_axis == "tokens" and any(t is None for run in runs for t in run.tokens):
        raise DeltarankError("a rank line has no tokens_seen; plot against step")
    names = list(dict.fromkeys(m for run in runs for m in run.modules()))
    r_by_module = dict.fromkeys(names, lora_rank) if lora_rank is not None else {}
    with paper_style():
        fig, axes, spare = module_grid(names, PANEL_HEIGHT_IN)
        columns = grid_shape(len(names))[1]
        for j, (ax, module) in enumerate(zip(axes, names, strict=True)):
            for i, run in enumerate(runs):
                x = np.array(run.steps if x_axis == "step" else run.tokens, dtype=float)
                for field, style in ((TRACKED_RANK, "-"), (TRACKED_FLOOR, "--")):
                    y = np.array(
                        [entry.get(module, {}).get(field, np.nan) for entry in run.ranks], dtype=float
                    )
                    ax.plot(
                        x,
                        y,
                        color=run_color(i),
                        linestyle=style,
                        marker=run_marker(i) if style == "-" else None,
                        markersize=3.5,
                        label=run.label if style == "-" else "_floor",
                    )
            lora_rank_line(ax, r_by_module, module)
            _step_axes(ax, x_axis, "median rank" if j % columns == 0 else None)
        axes[0].plot([], [], color="black", label="r₀.₉")
        axes[0].plot([], [], color="black", linestyle="--", label="noise-floor rank")
        place_legend(fig, axes, spare)
    return fig
