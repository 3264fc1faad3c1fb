"""The recommended LoRA ranks: retained energy of ΔW against rank, one panel per module type, with the chosen
ranks marked; and the `deltarank compare` table of recommendation results.

Each line is one matrix's kept share Σ_{i≤k} σ_i² / Σ σ_i² against rank k (log axis), coloured by layer
(light: first, dark: last; grey outside the blocks); a black dot sits on each line at its chosen rank (none for
a matrix left out of the adapter), and a dashed grey line marks τ of the energy policy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from deltarank.analysis.results.columns import MATRICES
from deltarank.analysis.results.recommendation import (
    MatrixRecommendation,
    RecommendationResult,
    summarise,
)
from deltarank.errors import DeltarankError
from deltarank.figures.panels import grid_shape, module_grid
from deltarank.figures.runs import result_labels
from deltarank.figures.style import REFERENCE_STYLE, paper_style, plain_log_axis, short_module
from deltarank.figures.tables import ALL_ROW, FINE, Cell, CompareTable, _row_groups

PANEL_HEIGHT_IN = 1.5
LAYER_CMAP = "viridis_r"  # sequential and colour-blind safe; reversed so the first layer is light
OUTSIDE_COLOR = "#7F7F7F"  # matrices outside the transformer blocks
CHOSEN_GID = "chosen"
TAU_GID = "tau"


def plot_recommendation(result: RecommendationResult, modules: Sequence[str] | None = None) -> Figure:
    """Retained energy against rank per matrix, one panel per module type, the chosen ranks marked.

    Args:
        result: A recommendation result.
        modules: Module types to draw, in order; when omitted, every one with a matrix whose ΔW ≠ 0 (an
            unchanged module type has nothing to keep).

    Raises:
        DeltarankError: no module type to draw.
    """
    groups = result.by_module()
    changed = [module for module, items in groups.items() if any(m.delta_norm > 0 for m in items)]
    names = list(modules) if modules is not None else changed
    if not names:
        raise DeltarankError(f"{result.tuned}: no matrix of the recommendation changed (every ΔW = 0)")
    layers = [m.layer for m in result.matrices if m.layer is not None]
    span = (min(layers), max(layers)) if layers else (0, 0)
    with paper_style():
        fig, axes, spare = module_grid([short_module(m) for m in names], PANEL_HEIGHT_IN)
        columns = grid_shape(len(names))[1]
        for index, (ax, module) in enumerate(zip(axes, names, strict=True)):
            _draw_panel(ax, groups.get(module, []), span)
            if result.policy == "energy" and result.energy is not None:
                ax.axhline(result.energy, gid=TAU_GID, **REFERENCE_STYLE)
            ax.set_xscale("log")
            plain_log_axis(ax.xaxis)
            ax.set_ylim(-0.02, 1.02)
            ax.set_xlabel("rank k")
            if index % columns == 0:
                ax.set_ylabel("share of ‖ΔW‖² kept")
        if spare is not None:  # one legend: in the free cell of the grid, else in the first panel
            spare.legend(handles=_legend(result), loc="center")
        else:
            axes[0].legend(handles=_legend(result), loc="lower right", fontsize=6)
        fig.suptitle(_title(result), fontsize=8)
    return fig


def _draw_panel(ax: Axes, items: list[MatrixRecommendation], span: tuple[int, int]) -> None:
    """One curve per matrix, coloured by layer, and a dot at each chosen rank."""
    cmap = colormaps[LAYER_CMAP]
    width = max(1, span[1] - span[0])
    for m in items:
        if not m.curve or m.delta_norm == 0:  # ΔW = 0: no energy to keep, no line
            continue
        colour = OUTSIDE_COLOR if m.layer is None else cmap(0.15 + 0.85 * (m.layer - span[0]) / width)
        ranks = np.arange(1, len(m.curve) + 1)
        ax.plot(ranks, m.curve, color=colour, linewidth=0.9)
        if m.rank > 0:
            ax.plot(
                [m.rank], [m.retained_energy], "o", color="black", markersize=2.5, zorder=3, gid=CHOSEN_GID
            )


def _legend(result: RecommendationResult) -> list[Line2D]:
    cmap = colormaps[LAYER_CMAP]
    handles = [
        Line2D([], [], color=cmap(0.15), linewidth=0.9, label="first layer"),
        Line2D([], [], color=cmap(1.0), linewidth=0.9, label="last layer"),
        Line2D([], [], marker="o", linestyle="none", color="black", markersize=2.5, label="chosen rank"),
    ]
    if result.policy == "energy" and result.energy is not None:
        handles.append(Line2D([], [], label=f"τ = {result.energy:g}", **REFERENCE_STYLE))
    return handles


def _title(result: RecommendationResult) -> str:
    policy = f"τ = {result.energy:g}" if result.policy == "energy" else f"budget {result.budget:,} parameters"
    return (
        f"LoRA ranks from ΔW ({policy}): {result.trainable_parameters:,} parameters keep "
        f"{result.retained_energy:.1%} of ‖ΔW‖²"
    )


def recommendation_table(
    results: Sequence[RecommendationResult], labels: Sequence[str] | None = None
) -> CompareTable:
    """Per module type: `matrices`, and per run the rank range chosen (`<label> rank`), the LoRA parameters
    they cost (`<label> params`) and the share of the group's Σ‖ΔW‖_F² they keep (`<label> energy`). The row
    `all` takes every matrix: the adapter's total parameters and the share kept overall.

    Raises:
        DeltarankError: the labels do not match the results, or a result has no matrices.
    """
    names = result_labels(results, labels)
    for result in results:
        if not result.matrices:
            raise DeltarankError(f"{result.tuned}: the result holds no matrices")
    columns = ["module", MATRICES]
    decimals: list[int | None] = [None, None]
    for name in names:
        columns += [f"{name} rank", f"{name} params", f"{name} energy"]
        decimals += [None, None, FINE]
    modules = dict.fromkeys(m.module for r in results for m in r.matrices)
    rows: list[tuple[Cell, ...]] = []
    for module in [*modules, ALL_ROW]:
        groups, count = _row_groups(results, module)
        row: list[Cell] = [module, count]
        for group in groups:
            row += _cells(group)
        rows.append(tuple(row))
    return CompareTable(columns=tuple(columns), rows=tuple(rows), decimals=tuple(decimals))


def _cells(group: list[MatrixRecommendation]) -> list[Cell]:
    """Rank range, parameters and kept share of one row's matrices; `-` when the run has none."""
    return list(summarise(group)) if group else [None, None, None]
