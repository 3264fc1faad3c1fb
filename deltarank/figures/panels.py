"""Panel grids shared by the per-module figures: one panel per module type, wrapped into rows."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.legend import Legend

from deltarank.figures.style import (
    DOUBLE_COLUMN_IN,
    LORA_RANK_STYLE,
    SINGLE_COLUMN_IN,
    new_figure,
    plain_log_axis,
)

MAX_COLUMNS = 4
LEGEND_ROW_IN = 0.17  # height of one legend row at 7 pt, added to a figure whose legend goes below
LEGEND_FONT_PT = 6  # the compact legend above a study figure's axes
MAX_LEGEND_COLUMNS = 3
LEGEND_WIDTH_SHARE = 0.97  # of the figure's width, the most a legend above the axes may take
LEGEND_PAD_IN = 0.04  # between that legend and the axes


def grid_shape(panels: int, max_columns: int = MAX_COLUMNS) -> tuple[int, int]:
    """(rows, columns) for `panels` panels, at most `max_columns` wide."""
    columns = max(1, min(panels, max_columns))
    return math.ceil(panels / columns), columns


def figure_width(columns: int) -> float:
    """Single-column width for one or two panels in a row, double-column width for more."""
    return SINGLE_COLUMN_IN if columns <= 2 else DOUBLE_COLUMN_IN


def module_grid(
    modules: list[str], panel_height: float, sharey: bool = True
) -> tuple[Figure, list[Axes], Axes | None]:
    """A figure with one axes per module type and, when the grid has a free cell, an axes for the legend.

    Returns:
        The figure, the axes in module order, and the spare axes (turned off) or None.
    """
    rows, columns = grid_shape(len(modules))
    fig = new_figure(figure_width(columns), panel_height * rows)
    grid = fig.add_gridspec(rows, columns)
    axes: list[Axes] = []
    for i, module in enumerate(modules):
        share = axes[0] if (sharey and axes) else None
        ax = fig.add_subplot(grid[i // columns, i % columns], sharey=share)
        ax.set_title(module)
        axes.append(ax)
    spare = None
    if len(modules) < rows * columns:
        spare = fig.add_subplot(grid[rows - 1, columns - 1])
        spare.set_axis_off()
    for i, ax in enumerate(axes):
        if sharey and i % columns != 0:
            ax.tick_params(labelleft=False)
    return fig, axes, spare


def place_legend(fig: Figure, axes: list[Axes], spare: Axes | None) -> None:
    """Put one legend for the whole figure in the spare cell, else below the panels (never over data)."""
    handles, labels = axes[0].get_legend_handles_labels()
    seen = dict(zip(labels, handles, strict=True))
    for ax in axes[1:]:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            seen.setdefault(label, handle)
    if not seen:
        return
    if spare is not None:
        spare.legend(list(seen.values()), list(seen.keys()), loc="center")
    else:
        legend_below(fig, list(seen.values()), list(seen.keys()))


def legend_below(fig: Figure, handles: list[Any], labels: list[str]) -> None:
    """A figure legend under the panels; the figure grows by the legend's height so panels keep theirs."""
    columns = min(len(labels), 2 if fig.get_figwidth() < DOUBLE_COLUMN_IN else 4)
    fig.set_figheight(fig.get_figheight() + LEGEND_ROW_IN * (math.ceil(len(labels) / columns) + 0.6))
    fig.legend(handles, labels, loc="outside lower center", ncols=columns)


def legend_above(fig: Figure, title: str | None = None) -> Legend | None:
    """One compact legend above the axes: every labelled artist of the figure once, in small type, in as many
    columns (at most three) as the figure's width holds, under a one-line `title` (what the lines or the error
    bars mean); the figure grows by the legend's height, so the axes keep the height they were drawn at and
    the data keep most of the figure. None when nothing is labelled."""
    seen: dict[str, Any] = {}
    for ax in fig.axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            seen.setdefault(label, handle)
    if not seen:
        return None
    renderer = _renderer(fig)
    room = fig.get_figwidth() * fig.dpi * LEGEND_WIDTH_SHARE
    n = len(seen)  # columns as full as the rows allow: 4 entries in 2 × 2, not 3 + 1
    columns = sorted({math.ceil(n / math.ceil(n / c)) for c in range(1, min(MAX_LEGEND_COLUMNS, n) + 1)})
    for ncols in reversed(columns):
        legend = fig.legend(
            list(seen.values()),
            list(seen),
            loc="outside upper center",
            ncols=ncols,
            fontsize=LEGEND_FONT_PT,
            handlelength=1.4,
            handletextpad=0.6,
            columnspacing=0.9,
            labelspacing=0.25,
            borderaxespad=0.2,
            title=title or None,
            title_fontsize=LEGEND_FONT_PT,
        )
        box = legend.get_window_extent(renderer)
        if box.width <= room or ncols == 1:
            break
        legend.remove()
    fig.set_figheight(fig.get_figheight() + box.height / fig.dpi + LEGEND_PAD_IN)
    return legend


def interval_bars(
    ax: Axes,
    xs: Sequence[float],
    ys: Sequence[float],
    bounds: Sequence[tuple[float, float]],
    axis: str,
    color: str,
    gid: str,
) -> None:
    """95% intervals as thin capped error bars behind the markers: (low, high) per point (xs, ys) along `axis`
    (`x`: across, `y`: up and down), in the series' colour; their collection named `gid` (tests find it)."""
    centres = xs if axis == "x" else ys
    # A percentile-bootstrap interval need not hold its point estimate (a change of ~1e-6, all rounding, can
    # fall just outside it): the bar then runs from the point to the far end, covering the interval whole.
    err = [[max(c - b[0], 0.0) for c, b in zip(centres, bounds, strict=True)],
           [max(b[1] - c, 0.0) for c, b in zip(centres, bounds, strict=True)]]  # fmt: skip
    bars = ax.errorbar(
        list(xs),
        list(ys),
        xerr=err if axis == "x" else None,
        yerr=err if axis == "y" else None,
        fmt="none",
        ecolor=color,
        elinewidth=0.7,
        capsize=1.5,
        capthick=0.7,
        zorder=2,
        label="_interval",
    )
    for collection in bars.lines[2]:
        collection.set_gid(gid)


def _renderer(fig: Figure) -> Any:
    """A renderer to measure text with: the figure's canvas's, an Agg canvas's for a figure made without one."""
    if not hasattr(fig.canvas, "get_renderer"):
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        FigureCanvasAgg(fig)
    return fig.canvas.get_renderer()  # type: ignore[attr-defined]


def lora_rank_line(ax: Axes, r_by_module: dict[str, int], module: str) -> None:
    """A dotted line at the module type's LoRA rank r, when one is known."""
    if module in r_by_module:
        same = len(set(r_by_module.values())) == 1
        ax.axhline(
            r_by_module[module],
            label=f"LoRA r = {r_by_module[module]}" if same else "LoRA r",
            **LORA_RANK_STYLE,
        )


def log_rank_axis(ax: Axes) -> None:
    """A logarithmic y axis labelled with plain counts (1, 2, 5, 10, ...)."""
    ax.set_yscale("log")
    ax.margins(y=0.12)  # keep reference lines off the frame
    plain_log_axis(ax.yaxis)
