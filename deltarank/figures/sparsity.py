"""Sparse or low-rank: every run placed on two axes, one point per module type.

x: the share of entries a fine-tune changed by more than the run's tolerance (1 − `within_atol`); y: the
numerical rank of ΔW ÷ min(m, n). Each point is the median over the module type's layers, with interquartile
whiskers (`rank_statistics`, the per-module statistics every view shows). Reinforcement-learning updates sit
left and high (few entries, nearly full rank; Mukherjee et al. 2025), LoRA right and low (every entry, rank r),
full supervised fine-tuning right and high. Colour tells runs apart, the marker module types.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from deltarank.analysis.results import SpectrumResult
from deltarank.analysis.results.rank_statistics import module_rank_statistics
from deltarank.figures.panels import LEGEND_ROW_IN
from deltarank.figures.runs import Run, as_runs, display_labels, module_order
from deltarank.figures.style import (
    MARKERS,
    PALETTE,
    REFERENCE_COLOR,
    SINGLE_COLUMN_IN,
    new_figure,
    paper_style,
    run_color,
)

HEIGHT_IN = 2.8
MODULE_LEGEND_COLUMNS = 2
AXIS_MARGIN = 0.04  # beyond 0 and 1 on both axes, so points on the edges keep their markers whole


# One module type's point: ((q1, median, q3) of the share changed beyond atol, (q1, median, q3) of rank ÷ width).
SparsityPoint = tuple[tuple[float, float, float], tuple[float, float, float]]


def has_sparsity(result: SpectrumResult) -> bool:
    """Whether a result holds a sparsity profile (files written before it was recorded do not)."""
    return any(m.sparsity is not None for m in result.matrices)


def sparsity_points(run: Run) -> dict[str, SparsityPoint]:
    """Per module type, ((q1, median, q3) of the share changed beyond atol, (q1, median, q3) of rank ÷ min(m, n))
    over its layers; module types without both are left out."""
    points = {}
    for module, row in module_rank_statistics(run.result).items():
        kept, rank = row.get("within_atol"), row.get("rank_fraction")
        if kept is None or rank is None:
            continue
        changed = (1.0 - kept["q3"], 1.0 - kept["median"], 1.0 - kept["q1"])  # 1 − x reverses the quartiles
        points[module] = (changed, (rank["q1"], rank["median"], rank["q3"]))
    return points


def plot_sparsity(
    results: SpectrumResult | Sequence[SpectrumResult] | Sequence[Run], labels: Sequence[str] | None = None
) -> Figure:
    """Share of entries changed beyond the tolerance against rank ÷ min dimension, per module type and run.

    Args:
        results: One result, several (one per run), or prepared runs; results without a sparsity profile are
            left out.
        labels: Legend names, one per result; derived from the tuned paths when omitted.

    Returns:
        The figure: one axes, both shares from 0 to 1, a legend of runs (colour) and module types (marker).
    """
    runs = as_runs(results, labels)
    names = display_labels(runs)
    shown = [(run, name) for run, name in zip(runs, names, strict=True) if has_sparsity(run.result)]
    tolerances = {run.result.sparsity_atol for run, _ in shown if run.result.sparsity_atol is not None}
    return plot_sparsity_points(
        [(name, sparsity_points(run)) for run, name in shown],
        modules=module_order([run.result for run, _ in shown]),
        atol=tolerances.pop() if len(tolerances) == 1 else None,
    )


def plot_sparsity_points(
    series: Sequence[tuple[str, Mapping[str, SparsityPoint]]],
    modules: Sequence[str] | None = None,
    atol: float | None = None,
) -> Figure:
    """The figure of `plot_sparsity` from points already summarised (`sparsity_points`' form), e.g. kept in a
    benchmark's cache in place of whole spectra.

    Args:
        series: (legend name, module type -> (changed quartiles, rank ÷ width quartiles)) per run, in order.
        modules: Module types in legend order; first seen in `series` when omitted.
        atol: The tolerance every run used (named in the x label); None when unknown or mixed.

    Returns:
        The figure, as `plot_sparsity` draws it.
    """
    modules = list(modules or dict.fromkeys(m for _, points in series for m in points))
    marker = {module: MARKERS[i % len(MARKERS)] for i, module in enumerate(modules)}
    with paper_style():
        fig = new_figure(SINGLE_COLUMN_IN, HEIGHT_IN)
        ax = fig.add_subplot()
        for i, (_, points) in enumerate(series):
            for module, (changed, rank) in points.items():
                ax.errorbar(
                    changed[1],
                    rank[1],
                    xerr=[[changed[1] - changed[0]], [changed[2] - changed[1]]],
                    yerr=[[rank[1] - rank[0]], [rank[2] - rank[1]]],
                    fmt=marker[module],
                    markersize=4,
                    markerfacecolor=_face(i),
                    color=run_color(i),
                    elinewidth=0.7,
                    capsize=0,
                    zorder=3,
                )
        _format_axes(ax, atol)
        runs_key = [_handle(run_color(i), "o", _face(i)) for i in range(len(series))]
        modules_key = [_handle(REFERENCE_COLOR, marker[m], REFERENCE_COLOR) for m in modules]
        _legends(fig, (runs_key, [name for name, _ in series]), (modules_key, modules))
    return fig


def _legends(
    fig: Figure, runs: tuple[list[Line2D], list[str]], modules: tuple[list[Line2D], list[str]]
) -> None:
    """Two keys under the axes, side by side: runs (colour) on the left, module types (marker) on the right;
    the figure grows by the taller one, so the axes keep their height."""
    module_columns = MODULE_LEGEND_COLUMNS if len(modules[1]) > MODULE_LEGEND_COLUMNS else 1
    rows = max(len(runs[1]), math.ceil(len(modules[1]) / module_columns))
    fig.set_figheight(fig.get_figheight() + LEGEND_ROW_IN * (rows + 1.6))  # + the titles
    fig.legend(*runs, loc="outside lower left", title="run", alignment="left")
    fig.legend(*modules, loc="outside lower right", title="module", ncols=module_columns, alignment="left")


def _face(index: int) -> str:
    """Marker fill of the `index`-th run: filled, hollow, filled, ... (runs differ in greyscale too); the
    alternation flips each time the palette comes round, so runs i and i + len(PALETTE), which share a colour,
    differ in fill."""
    return "none" if (index + index // len(PALETTE)) % 2 else run_color(index)


def _handle(color: str, marker: str, face: str) -> Line2D:
    """A legend entry: a marker alone."""
    return Line2D([], [], color=color, marker=marker, markerfacecolor=face, linestyle="none", markersize=4)


def _format_axes(ax: Axes, atol: float | None) -> None:
    """Both shares from 0 to 1 (with a margin), the tolerance in the x label, the ends of each axis named."""
    tolerance = "atol" if atol is None else f"{atol:g}"
    ax.set_xlim(-AXIS_MARGIN, 1 + AXIS_MARGIN)
    ax.set_ylim(-AXIS_MARGIN, 1 + AXIS_MARGIN)
    ax.set_xlabel(f"entries changed, |Δw| > {tolerance} (sparse → dense)")
    ax.set_ylabel("rank ÷ min(m, n) (low → full)")
