"""The figures of a study, from its study.json alone (`deltarank.study/1`); only those its runs allow.

| file | drawn when | shows |
|---|---|---|
| study_score_vs_data_size | ≥ 2 data sizes | learning score against training examples, one line per model × method |
| study_score_vs_parameters | ≥ 2 runs | learning score against trainable parameters (log) |
| study_score_vs_cost | ≥ 2 runs with cost | learning score against device-seconds (log): the cost trade-off |
| study_learning_forgetting | ≥ 2 runs with both | learning against forgetting, each method's Pareto front, controls labelled |
| study_diversity | any diversity | distinct outputs per prompt: base and each method (passing / failing when checked) |
| study_rank_vs_data_size | ≥ 2 data sizes with ranks | median ΔW energy_90 against training examples |
| study_rank_vs_duration | ≥ 2 durations with ranks | median ΔW energy_90 against max_steps or epochs |

The score and learning–forgetting figures compare the runs trained from a base model; a stacked run (`from:`
another run) learned a second task on another held-out set, so it is left out of them and reported in the
study's table. The learning score is the exact-match accuracy when every plotted run has one, else the
held-out loss (lower: learned more). On the learning–forgetting plane, learning is the drop of the held-out
loss from the base model (or the accuracy gain) and forgetting the rise of the loss on the base model's own
general text. Runs of one line that differ only in other settings (seeds, learning rates) are averaged at
each x. The plane and the diversity bars are drawn by `deltarank.figures.study_panels`.

Every compared number has its 95% interval (`deltarank.figures.study_intervals`, which says where each comes
from): a score point's error bar is the report's rule, the seed t interval of study.json's group combined in
quadrature with the evaluation noise of the mean (the binomial of an accuracy, the paired bootstrap of a
held-out loss change kept in the row), or evaluation noise alone where the point is one run or averages runs
of several settings; the legend's title says which. An accuracy figure draws its set's chance level as a
dashed line (`study_rows.ACCURACY_CHANCE`). The rank lines have no interval (a median over module types).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from deltarank.errors import InputError, OutputError
from deltarank.figures import study_intervals as intervals
from deltarank.figures import study_rows as rows
from deltarank.figures.panels import interval_bars, legend_above
from deltarank.figures.save import parse_formats, save_figure
from deltarank.figures.study_panels import HEIGHT_IN, plot_diversity, plot_learning_forgetting
from deltarank.figures.style import (
    REFERENCE_STYLE,
    SINGLE_COLUMN_IN,
    new_figure,
    paper_style,
    plain_log_axis,
    plain_number,
    run_color,
    run_linestyle,
    run_marker,
)

SCHEMA = "deltarank.study/1"
SCHEMA_PEEK_BYTES = 4096  # study.json starts with its schema
CHANCE_GID = "chance"
Run = rows.Run
Groups = Sequence[Mapping[str, Any]]


class Score(NamedTuple):
    """The learning score of a figure: its axis label, its value per run, and the metric its intervals are of
    (`accuracy`, `held_out_loss`; None: no interval)."""

    label: str
    value: Callable[[Run], float | None]
    metric: str | None = None


class Point(NamedTuple):
    """One drawn point: x, the mean y of its runs, and its 95% interval with the noises that interval holds."""

    x: float
    y: float
    interval: intervals.Interval | None = None
    kinds: frozenset[str] = frozenset()


def is_study(data: Any) -> bool:
    """True for a study.json document."""
    return isinstance(data, Mapping) and data.get("schema") == SCHEMA


def is_study_file(path: Path) -> bool:
    """True for a JSON file that declares the study schema near its start (no full read)."""
    if path.suffix != ".json" or not path.is_file():
        return False
    try:
        with path.open("rb") as handle:
            head = handle.read(SCHEMA_PEEK_BYTES)
    except OSError:
        return False
    return f'"{SCHEMA}"'.encode() in head


def read_study(path: Path) -> dict[str, Any]:
    """A study.json document.

    Raises:
        InputError: unreadable, not JSON, or not a `deltarank.study/1` document.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot read the study file ({exc.__class__.__name__})") from None
    except json.JSONDecodeError as exc:
        raise InputError(path, f"not a JSON study file ({exc.msg} at line {exc.lineno})") from None
    if not is_study(data):
        raise InputError(path, f"not a {SCHEMA} document")
    return dict(data)


def learning_score(runs: Sequence[Run]) -> Score:
    """(axis label, value, metric): accuracy when every run has one, else the held-out loss."""
    if runs and all(rows.accuracy(r) is not None for r in runs):
        return Score("accuracy", rows.accuracy, "accuracy")
    return Score("held-out loss (lower: learned more)", rows.held_out_loss, "held_out_loss")


def _series(
    runs: Sequence[Run],
    x: Callable[[Run], float | None],
    y: Callable[[Run], float | None],
    label: Callable[[Run], str],
    metric: str | None = None,
    groups: Groups = (),
) -> dict[str, list[Point]]:
    """Per series label, the points (x, mean y of the runs there) in x order (runs with both values only); with
    a `metric`, each point's 95% interval (`study_intervals.point_interval`, seeds from `groups`)."""
    found: dict[str, dict[float, list[tuple[Run, float]]]] = {}
    for run in runs:
        xv, yv = x(run), y(run)
        if xv is not None and yv is not None:
            found.setdefault(label(run), {}).setdefault(float(xv), []).append((run, float(yv)))
    series: dict[str, list[Point]] = {}
    for name, points in found.items():
        series[name] = []
        for xv, members in sorted(points.items()):
            bar = (
                None if metric is None else intervals.point_interval([r for r, _ in members], metric, groups)
            )
            mean = sum(v for _, v in members) / len(members)
            series[name].append(Point(xv, mean, *bar) if bar else Point(xv, mean))
    return series


def _draw_intervals(ax: Axes, name: str, points: Sequence[Point], color: str) -> None:
    """The points' 95% intervals as vertical error bars (gid `interval:<name>`); none without intervals."""
    shown = [p for p in points if p.interval is not None]
    if not shown:
        return
    bounds = [p.interval for p in shown if p.interval is not None]
    gid = f"{intervals.INTERVAL_GID}:{name}"
    interval_bars(ax, [p.x for p in shown], [p.y for p in shown], bounds, "y", color, gid)


def _reference_lines(ax: Axes, chance: float | None) -> None:
    """The chance level of an accuracy: dashed, named in the legend."""
    if chance is not None:
        ax.axhline(chance, label=f"chance ({chance:g})", gid=CHANCE_GID, **REFERENCE_STYLE)


def _bars_note(series: Mapping[str, Sequence[Point]]) -> str:
    """The legend's title: the noises the error bars hold ('' without bars)."""
    return intervals.bars_note([p.kinds for points in series.values() for p in points if p.interval])


def _setting_number(key: str) -> Callable[[Run], float | None]:
    def value(run: Run) -> float | None:
        found = rows.setting(run, key)
        return None if found is None else float(found)

    return value


def _line_figure(
    series: Mapping[str, Sequence[Point]], xlabel: str, ylabel: str, log_x: bool, chance: float | None = None
) -> Figure:
    with paper_style():
        fig = new_figure(SINGLE_COLUMN_IN, HEIGHT_IN)
        ax = fig.add_subplot()
        for k, (label, points) in enumerate(series.items()):
            ax.plot(
                [p.x for p in points],
                [p.y for p in points],
                color=run_color(k),
                marker=run_marker(k),
                linestyle=run_linestyle(k),
                label=label,
            )
            _draw_intervals(ax, label, points, run_color(k))
        _reference_lines(ax, chance)
        if log_x:
            ax.set_xscale("log", base=2)
            ax.set_xticks(sorted({p.x for points in series.values() for p in points}))
            ax.xaxis.set_major_formatter(_plain())
            ax.xaxis.set_minor_formatter(_plain(""))
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        legend_above(fig, _bars_note(series))
    return fig


def _plain(text: str | None = None) -> Any:
    """Tick labels as plain numbers (`text` instead, e.g. '' to hide minor ticks' labels)."""
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda value, _pos: plain_number(value) if text is None else text)


def _scatter_figure(
    runs: Sequence[Run],
    x: Callable[[Run], float | None],
    score: Score,
    xlabel: str,
    label: Callable[[Run], str],
    groups: Groups = (),
    chance: float | None = None,
) -> Figure:
    series = _series(runs, x, score.value, label, score.metric, groups)
    with paper_style():
        fig = new_figure(SINGLE_COLUMN_IN, HEIGHT_IN)
        ax = fig.add_subplot()
        for k, (name, points) in enumerate(series.items()):
            ax.plot(
                [p.x for p in points],
                [p.y for p in points],
                linestyle="none",
                marker=run_marker(k),
                color=run_color(k),
                markeredgecolor="white",
                markeredgewidth=0.5,
                zorder=3,
                label=name,
            )
            _draw_intervals(ax, name, points, run_color(k))
        _reference_lines(ax, chance)
        ax.set_xscale("log")
        plain_log_axis(ax.xaxis)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(score.label)
        legend_above(fig, _bars_note(series))
    return fig


def _trainable(run: Run) -> float | None:
    return rows.number(run, "cost", "trainable_parameters")


def _cost_seconds(run: Run) -> float | None:
    for key in ("device_seconds", "train_seconds", "wall_seconds"):
        value = rows.number(run, "cost", key)
        if value:
            return value
    return None


def study_figures(study: Mapping[str, Any]) -> dict[str, Figure]:
    """Every figure the study's runs allow, by file stem."""
    runs = [r for r in study.get("runs") or [] if isinstance(r, Mapping)]
    figures: dict[str, Figure] = {}
    plain = [r for r in runs if not r.get("from")]
    label = rows.labeller(runs)
    score = learning_score(plain)
    groups = [g for g in study.get("groups") or [] if isinstance(g, Mapping)]
    chance = rows.chance_accuracy(plain) if score.metric == "accuracy" else None
    size = _setting_number("data_size")
    sizes = {size(r) for r in plain if size(r) is not None}
    if len(sizes) >= 2:
        series = _series(plain, size, score.value, label, score.metric, groups)
        if any(len(p) >= 2 for p in series.values()):
            figures["study_score_vs_data_size"] = _line_figure(
                series, "training examples", score.label, log_x=True, chance=chance
            )
        ranked = _series(plain, size, rows.rank_summary, label)
        if any(len(p) >= 2 for p in ranked.values()):
            figures["study_rank_vs_data_size"] = _line_figure(
                ranked, "training examples", "ΔW energy_90 (median)", log_x=True
            )
    scored = [r for r in plain if score.value(r) is not None]
    if len(scored) >= 2:
        if sum(_trainable(r) is not None for r in scored) >= 2:
            figures["study_score_vs_parameters"] = _scatter_figure(
                scored, _trainable, score, "trainable parameters", label, groups, chance
            )
        if sum(_cost_seconds(r) is not None for r in scored) >= 2:
            figures["study_score_vs_cost"] = _scatter_figure(
                scored, _cost_seconds, score, "device-seconds", label, groups, chance
            )
    plane = plot_learning_forgetting(plain, label, study)
    if plane is not None:
        figures["study_learning_forgetting"] = plane
    diversity = plot_diversity(study, runs, label)
    if diversity is not None:
        figures["study_diversity"] = diversity
    for key in rows.DURATIONS:
        duration = _setting_number(key)
        if len({duration(r) for r in plain if duration(r) is not None}) >= 2:
            ranked = _series(plain, duration, rows.rank_summary, label)
            if any(len(p) >= 2 for p in ranked.values()):
                name = "training steps" if key == "max_steps" else "epochs"
                figures["study_rank_vs_duration"] = _line_figure(
                    ranked, name, "ΔW energy_90 (median)", log_x=True
                )
                break
    return figures


def render_study_figures(
    study: Mapping[str, Any], out_dir: Path, formats: Sequence[str] = ("png",), *, overwrite: bool = True
) -> list[Path]:
    """Draw every figure the study allows into `out_dir`; returns the written files.

    Raises:
        InputError: `study` is not a `deltarank.study/1` document.
        OutputError: `out_dir` cannot be written, or (without `overwrite`) a figure file exists already.
    """
    if not is_study(study):
        raise InputError(str(out_dir), f"not a {SCHEMA} document")
    figures = study_figures(study)
    if not overwrite:
        for stem in figures:
            for fmt in parse_formats(formats):
                if (path := Path(out_dir) / f"{stem}.{fmt}").exists():
                    raise OutputError(f"{path}: already exists (use --force to replace it)")
    written: list[Path] = []
    for stem, fig in figures.items():
        written += save_figure(fig, out_dir, stem, formats)
    return written
