"""Panel grids shared by the per-module figures: one panel per module type, wrapped into rows."""

from __future__ import annotations

import math
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from deltarank.figures.style import (
    DOUBLE_COLUMN_IN,
    LORA_RANK_STYLE,
    SINGLE_COLUMN_IN,
    new_figure,
    plain_log_axis,
)

MAX_COLUMNS = 4
LEGEND_ROW_IN = 0.17  # height of one legend row at 7 pt, added to a figure whose legend goes below
LONG_LABEL = 28  # characters: a legend above the axes with longer labels goes one per row


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


def legend_above(fig: Figure) -> None:
    """The legend above the axes: two columns, one when the labels are long."""
    labels = [t for ax in fig.axes for t in ax.get_legend_handles_labels()[1]]
    ncols = 1 if max((len(t) for t in labels), default=0) > LONG_LABEL else 2
    fig.legend(loc="outside upper center", ncols=ncols, handlelength=1.6, columnspacing=1.0)


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
