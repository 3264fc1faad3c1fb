"""Figure 5: learning against forgetting, one point per run/checkpoint, with the Pareto front.

Reads the reproduction's `summary.json` (schema `deltarank.reproduce/1`). For a point with held-out
target-domain loss L_t and general-text loss L_g, and the base model's L_t⁰, L_g⁰:
learning = L_t⁰ − L_t (higher: learned more), forgetting = L_g − L_g⁰ (higher: forgot more).
The Pareto front is the set of points that no other point beats on both (more learning and less
forgetting), the base model included at (0, 0) (Biderman et al. 2024, Fig. 1: LoRA and full fine-tuning
lie on one learning–forgetting curve).

The final model of each run carries the 95% intervals the summary keeps (`intervals`, written by
`deltarank.study.report.summary` from the study's rows): the paired bootstrap over the evaluation sequences of
its held-out loss change and of its general-text loss rise against the base (evaluation noise; one seed, so
no training noise), drawn as error bars on both axes; a summary without them (written before they were
recorded) gets none. The checkpoints before the final have no interval.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from deltarank.errors import InputError
from deltarank.figures.panels import interval_bars, legend_above
from deltarank.figures.style import REFERENCE_COLOR, SINGLE_COLUMN_IN, new_figure, paper_style, run_color
from deltarank.io.training_methods import display_name

FORGETTING_AXIS = "forgetting: KL(base‖tuned), nats/token"  # the rise of the loss on the base's own samples

SUMMARY_SCHEMA = "deltarank.reproduce/1"
HEIGHT_IN = 2.6
INTERVAL_GID = "interval"  # an error bar's collection: `interval-x:<run>` (forgetting), `interval-y:<run>`
BARS_NOTE = "bars: 95% CI of the final models, evaluation noise"
RUN_STYLE: dict[str, tuple[str, str, str]] = {  # run -> (legend name, colour, marker)
    "full": (display_name("full"), run_color(0), "o"),
    "lora": (display_name("lora"), run_color(1), "s"),
}


@dataclass(frozen=True)
class TradeoffPoint:
    """One model on the learning–forgetting plane."""

    run: str
    step: int | None
    learning: float
    forgetting: float
    learning_ci95: tuple[float, float] | None = None
    forgetting_ci95: tuple[float, float] | None = None


def load_summary(path: str | Path) -> dict[str, Any]:
    """Read a reproduction summary.json.

    Raises:
        InputError: unreadable, not JSON, or not a `deltarank.reproduce/1` summary.
    """
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot read summary file ({exc.__class__.__name__})") from None
    except json.JSONDecodeError as exc:
        raise InputError(path, f"not a JSON summary file ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, dict) or data.get("schema") != SUMMARY_SCHEMA:
        raise InputError(path, f"not a {SUMMARY_SCHEMA} summary file")
    return data


def tradeoff_points(summary: Mapping[str, Any]) -> list[TradeoffPoint]:
    """Learning and forgetting of every point in the summary; the final runs when it lists no points. The final
    model of a run (its last point, when that is the run's final loss) carries the summary's intervals.

    Raises:
        InputError: the base losses or a point's losses are missing.
    """
    try:
        base_target = float(summary["base"]["target_loss"])
        base_general = float(summary["base"]["general_loss"])
        points = [
            TradeoffPoint(
                run=str(p["run"]),
                step=None if p.get("step") is None else int(p["step"]),
                learning=base_target - float(p["target_loss"]),
                forgetting=float(p["general_loss"]) - base_general,
            )
            for p in summary.get("points") or []
        ]
        if not points:
            learning, forgetting = summary["learning"], summary["forgetting"]
            points = [
                TradeoffPoint(
                    run=run,
                    step=None,
                    learning=base_target - float(learning[run]),
                    forgetting=float(forgetting[run]),
                )
                for run in forgetting
            ]
        return _with_intervals(points, summary, base_target)
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError("summary.json", f"missing or malformed field ({exc})") from None


def _with_intervals(
    points: list[TradeoffPoint], summary: Mapping[str, Any], base_target: float
) -> list[TradeoffPoint]:
    """The points, each run's final one with its intervals: learning = −(held-out loss change), so its interval
    is the change's negated; forgetting's is the rise's. A run whose last point is not its final loss (the
    summary's `learning[run]`) gets none."""
    found = summary.get("intervals") or {}
    changes, rises = found.get("held_out_loss_change") or {}, found.get("forgetting") or {}
    finals = summary.get("learning") or {}
    last = {p.run: p for p in sorted(points, key=lambda p: -1 if p.step is None else p.step)}
    drawn = []
    for point in points:
        change, rise = _pair(changes.get(point.run)), _pair(rises.get(point.run))
        final = finals.get(point.run)
        if (
            last[point.run] is point
            and final is not None
            and abs(base_target - float(final) - point.learning) < 1e-9
        ):
            point = replace(
                point,
                learning_ci95=None if change is None else (-change[1], -change[0]),
                forgetting_ci95=rise,
            )
        drawn.append(point)
    return drawn


def _pair(value: Any) -> tuple[float, float] | None:
    """[low, high] as a tuple of floats; None for anything else (an interval not recorded)."""
    if isinstance(value, list | tuple) and len(value) == 2 and all(v is not None for v in value):
        return float(value[0]), float(value[1])
    return None


def pareto_front(learning: Sequence[float], forgetting: Sequence[float]) -> list[int]:
    """Indices of the non-dominated points, sorted by forgetting.

    Point i is dominated when some j has forgetting_j ≤ forgetting_i and learning_j ≥ learning_i, with at
    least one strict. Scan in order of forgetting (ties: more learning first); a point is on the front
    when it learns strictly more than every point scanned before it.
    """
    order = sorted(range(len(learning)), key=lambda i: (forgetting[i], -learning[i]))
    front: list[int] = []
    best = -np.inf
    for i in order:
        if learning[i] > best:
            front.append(i)
            best = learning[i]
    return front


def plot_learning_forgetting(summary: Mapping[str, Any] | str | Path) -> Figure:
    """Learning (drop in target-domain loss) against forgetting (rise in general loss), Pareto front drawn.

    Args:
        summary: The reproduction's summary dict, or the path of its `summary.json`.

    Returns:
        The figure, single-column width: one marker per run/checkpoint (full: circles, LoRA: squares),
        each run's checkpoints joined in step order, the base model as a star, the front as a dashed line.
    """
    data = load_summary(summary) if isinstance(summary, str | Path) else summary
    points = tradeoff_points(data)
    with paper_style():
        fig = new_figure(SINGLE_COLUMN_IN, HEIGHT_IN)
        ax = fig.add_subplot()
        runs = list(dict.fromkeys(p.run for p in points))
        for k, run in enumerate(runs):
            name, color, marker = RUN_STYLE.get(run, (display_name(run), run_color(k + 2), "^"))
            mine = sorted((p for p in points if p.run == run), key=lambda p: -1 if p.step is None else p.step)
            x = [p.forgetting for p in mine]
            y = [p.learning for p in mine]
            ax.plot(x, y, color=color, linewidth=0.6, alpha=0.5, zorder=2, label="_trajectory")
            ax.plot(
                x,
                y,
                linestyle="none",
                marker=marker,
                markersize=4.5,
                color=color,
                markeredgecolor="white",
                markeredgewidth=0.5,
                zorder=3,
                label=name,
            )
        ax.plot(
            [0], [0], linestyle="none", marker="*", markersize=8, color="black", zorder=4, label="base model"
        )
        xs = [0.0, *(p.forgetting for p in points)]
        ys = [0.0, *(p.learning for p in points)]
        front = pareto_front(ys, xs)
        ax.plot(
            [xs[i] for i in front],
            [ys[i] for i in front],
            color=REFERENCE_COLOR,
            linewidth=4,
            alpha=0.35,
            solid_capstyle="round",
            zorder=1,
            label="Pareto front",
        )
        drawn = _draw_intervals(ax, points, runs)
        ax.set_xlabel(FORGETTING_AXIS)
        domain = data.get("domain")
        ax.set_ylabel(f"learning (drop in {domain} loss)" if domain else "learning (drop in target loss)")
        legend_above(fig, BARS_NOTE if drawn else None)
    return fig


def _draw_intervals(ax: Axes, points: Sequence[TradeoffPoint], runs: Sequence[str]) -> bool:
    """The final models' intervals: forgetting across (gid `interval-x:<run>`), learning up and down
    (`interval-y:<run>`), in the run's colour. True when any bar was drawn."""
    drawn = False
    for k, run in enumerate(runs):
        color = RUN_STYLE.get(run, ("", run_color(k + 2), ""))[1]
        for axis in ("x", "y"):
            found = [
                (p, bounds)
                for p in points
                if p.run == run and (bounds := p.forgetting_ci95 if axis == "x" else p.learning_ci95)
            ]
            if not found:
                continue
            interval_bars(
                ax,
                [p.forgetting for p, _ in found],
                [p.learning for p, _ in found],
                [b for _, b in found],
                axis,
                color,
                f"{INTERVAL_GID}-{axis}:{run}",
            )
            drawn = True
    return drawn
