"""The study's learning–forgetting plane and its diversity bars (`deltarank.study/1` run rows), with the
height and the legend above the axes that every study figure shares.

On the plane, learning is the accuracy gain over the base model when every run has one, else the drop of
the held-out loss from it; forgetting is the rise of the loss on the base model's own general text. Each run
is one point, with its 95% intervals on both axes (`deltarank.figures.study_intervals`): the evaluation-noise
intervals study.json keeps for the run (the paired bootstrap over the evaluation sequences of its held-out
loss change and of its general-text loss rise), or the binomial of an accuracy gain. A point is one run, so
there is no seed interval: the legend's title says "evaluation noise". A run whose row keeps no interval
has no bar.

The diversity bars count distinct outputs per prompt for the base model and each series, with the 95% t
interval over prompts that study.json keeps (`distinct_per_prompt_ci95`); their axis is linear from 0.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from deltarank.figures import study_intervals as intervals
from deltarank.figures import study_rows as rows
from deltarank.figures.learning import FORGETTING_AXIS, pareto_front
from deltarank.figures.panels import interval_bars, legend_above
from deltarank.figures.style import (
    REFERENCE_COLOR,
    SINGLE_COLUMN_IN,
    new_figure,
    paper_style,
    run_color,
    run_linestyle,
    run_marker,
)

HEIGHT_IN = 2.6
PLANE_NOTE = "lines: Pareto fronts; bars: 95% CI, evaluation noise"
Run = rows.Run


def _plane(runs: Sequence[Run]) -> tuple[str, bool, list[tuple[Run, float, float]]]:
    """(learning label, accuracy?, [(run, forgetting, learning)]): learning is the accuracy gain over the run's
    base model when every run has one, else the drop of the held-out loss from its base model."""
    points = []
    if runs and all(rows.number(r, "learning", "accuracy_change") is not None for r in runs):
        for run in runs:
            if (f := rows.forgetting(run)) is not None:
                points.append((run, f, float(rows.number(run, "learning", "accuracy_change") or 0)))
        return "learning (accuracy gain over the base)", True, points
    for run in runs:
        change, f = rows.number(run, "learning", "held_out_loss_change"), rows.forgetting(run)
        if change is not None and f is not None:
            points.append((run, f, -change))
    return "learning (drop in held-out loss)", False, points


def plot_learning_forgetting(
    runs: Sequence[Run], label: Callable[[Run], str], study: Mapping[str, Any] | None = None
) -> Figure | None:
    """Learning against forgetting, one marker per run with its 95% intervals on both axes (the base of an
    accuracy gain from `study`), each method's Pareto front (controls: their own)."""
    axis_label, accuracy, points = _plane(runs)
    if len(points) < 2:
        return None
    with paper_style():
        fig = new_figure(SINGLE_COLUMN_IN, HEIGHT_IN + 0.3)
        ax = fig.add_subplot()
        groups: dict[str, list[tuple[Run, float, float]]] = {}
        drawn = False
        for run, f, learn in points:
            groups.setdefault(label(run), []).append((run, f, learn))
        for k, (name, mine) in enumerate(groups.items()):
            color = run_color(k)
            xs, ys = [p[1] for p in mine], [p[2] for p in mine]
            ax.plot(
                xs,
                ys,
                linestyle="none",
                marker=run_marker(k),
                color=color,
                markeredgecolor="white",
                markeredgewidth=0.5,
                zorder=3,
                label=name,
            )
            drawn |= _draw_intervals(ax, name, mine, color, {} if study is None else study, accuracy)
            front = pareto_front(ys, xs)
            if len(front) > 1:
                ax.plot(
                    [xs[i] for i in front],
                    [ys[i] for i in front],
                    color=color,
                    linewidth=0.8,
                    linestyle=run_linestyle(k),
                    alpha=0.7,
                    zorder=2,
                    label="_front",
                )
        ax.plot(
            [0], [0], linestyle="none", marker="*", markersize=8, color="black", zorder=4, label="base model"
        )
        ax.axhline(0, color=REFERENCE_COLOR, linewidth=0.5, zorder=1)
        ax.axvline(0, color=REFERENCE_COLOR, linewidth=0.5, zorder=1)
        ax.set_xlabel(FORGETTING_AXIS)
        ax.set_ylabel(axis_label)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=4))
        legend_above(fig, PLANE_NOTE if drawn else PLANE_NOTE.split(";")[0])
    return fig


def _draw_intervals(
    ax: Axes,
    name: str,
    points: Sequence[tuple[Run, float, float]],
    color: str,
    study: Mapping[str, Any],
    accuracy: bool,
) -> bool:
    """Each run's 95% intervals: forgetting across (gid `interval-x:<name>`), learning up and down
    (`interval-y:<name>`); a run without one has no bar on that axis. True when any bar was drawn."""
    across = [(f, learn, i) for run, f, learn in points if (i := intervals.forgetting_interval(run))]
    upright = [
        (f, learn, i)
        for run, f, learn in points
        if (i := intervals.learning_interval(run, rows.base_of(study, run), accuracy))
    ]
    for axis, found in (("x", across), ("y", upright)):
        if found:
            xs, ys, bounds = [p[0] for p in found], [p[1] for p in found], [p[2] for p in found]
            interval_bars(ax, xs, ys, bounds, axis, color, f"{intervals.INTERVAL_GID}-{axis}:{name}")
    return bool(across or upright)


def plot_diversity(
    study: Mapping[str, Any], runs: Sequence[Run], label: Callable[[Run], str]
) -> Figure | None:
    """Distinct output strings per prompt: the base model and each series (mean over its runs) with its 95%
    interval (`study_intervals.diversity_interval`); with a checker, bars for the passing and the failing samples
    beside the total."""
    bars: dict[str, list[Mapping[str, Any]]] = {}
    every_base = rows.bases(study)
    for key, measured in every_base.items():
        diversity = measured.get("diversity") or {}
        if diversity.get("distinct_per_prompt") is not None:
            bars["base" if len(every_base) == 1 else f"base {key}"] = [diversity]
    for run in runs:
        diversity = rows.section(run, "diversity")
        if diversity.get("distinct_per_prompt") is not None:
            bars.setdefault(label(run), []).append(diversity)
    if not any(k != "base" for k in bars):
        return None
    keys = [("distinct_per_prompt", "all samples")]
    if any("distinct_passing_per_prompt" in d for group in bars.values() for d in group):
        keys += [("distinct_passing_per_prompt", "passing"), ("distinct_failing_per_prompt", "failing")]
    with paper_style():
        fig = new_figure(SINGLE_COLUMN_IN, HEIGHT_IN)
        ax = fig.add_subplot()
        width = 0.8 / len(keys)
        drawn = False
        for j, (key, name) in enumerate(keys):
            heights = []
            for group in bars.values():
                values = [float(d[key]) for d in group if d.get(key) is not None]
                heights.append(sum(values) / len(values) if values else 0.0)
            positions = [i + (j - (len(keys) - 1) / 2) * width for i in range(len(bars))]
            ax.bar(positions, heights, width=width, color=run_color(j), label=name)
            if key == "distinct_per_prompt":
                found = [
                    (x, h, b)
                    for x, h, group in zip(positions, heights, bars.values(), strict=True)
                    if (b := intervals.diversity_interval(group)) is not None
                ]
                if found:
                    drawn = True
                    interval_bars(
                        ax,
                        [f[0] for f in found],
                        [f[1] for f in found],
                        [f[2] for f in found],
                        "y",
                        REFERENCE_COLOR,
                        f"{intervals.INTERVAL_GID}-y:diversity",
                    )
        ax.set_xticks(range(len(bars)), list(bars), rotation=30, ha="right", rotation_mode="anchor")
        ax.set_ylabel("distinct outputs per prompt")
        samples = next(
            (d.get("samples_per_prompt") for g in bars.values() for d in g if d.get("samples_per_prompt")),
            None,
        )
        if samples:
            ax.axhline(
                float(samples),
                color=REFERENCE_COLOR,
                linestyle=":",
                linewidth=1.0,
                label=f"{samples} samples",
            )
        if len(keys) > 1 or samples:
            legend_above(fig, "bars: 95% t interval over prompts" if drawn else None)
    return fig
