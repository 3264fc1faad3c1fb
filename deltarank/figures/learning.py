"""Figure 5: learning against forgetting, one point per run/checkpoint, with the Pareto front.

Reads the reproduction's `summary.json` (schema `deltarank.reproduce/1`). For a point with held-out
target-domain loss L_t and general-text loss L_g, and the base model's L_t⁰, L_g⁰:
learning = L_t⁰ − L_t (higher: learned more), forgetting = L_g − L_g⁰ (higher: forgot more).
The Pareto front is the set of points that no other point beats on both (more learning and less
forgetting), the base model included at (0, 0) (Biderman et al. 2024, Fig. 1: LoRA and full fine-tuning
lie on one learning–forgetting curve).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from deltarank.errors import InputError
from deltarank.figures.style import REFERENCE_COLOR, SINGLE_COLUMN_IN, new_figure, paper_style, run_color
from deltarank.io.training_methods import display_name

FORGETTING_AXIS = "forgetting: KL(base‖tuned), nats/token"  # the rise of the loss on the base's own samples

SUMMARY_SCHEMA = "deltarank.reproduce/1"
HEIGHT_IN = 2.6
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
    """Learning and forgetting of every point in the summary; the final runs when it lists no points.

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
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError("summary.json", f"missing or malformed field ({exc})") from None
    return points


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
        ax.set_xlabel(FORGETTING_AXIS)
        domain = data.get("domain")
        ax.set_ylabel(f"learning (drop in {domain} loss)" if domain else "learning (drop in target loss)")
        fig.legend(loc="outside upper center", ncols=2, handlelength=1.6, columnspacing=1.0)
    return fig
