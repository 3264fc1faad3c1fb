"""Figures of the subspace analyses: φ heatmaps, intruder counts by layer, retained energy against rank.

Each function takes result objects (never a model, never an SVD) and returns a matplotlib Figure in the
shared paper style.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from deltarank.analysis.results.extract import ExtractResult
from deltarank.analysis.results.intruders import IntruderResult, count_intruders
from deltarank.analysis.results.similarity import SimilarityResult
from deltarank.figures.panels import grid_shape, module_grid, place_legend
from deltarank.figures.runs import run_label
from deltarank.figures.style import (
    REFERENCE_COLOR,
    SINGLE_COLUMN_IN,
    new_figure,
    paper_style,
    plain_log_axis,
    run_color,
    run_linestyle,
    run_marker,
    short_module,
)

HEATMAP_PANEL_IN = 1.7
LAYER_PANEL_IN = 1.35
ENERGY_HEIGHT_IN = 2.4
CHANCE_SIZE = 16  # the chance level is written for φ(k, k) at the largest stored k up to this
CHANCE_GID = "chance"
HEATMAP_CMAP = "viridis"  # perceptually uniform and colour-blind safe
ANNOTATE_MAX_CELLS = 6  # write φ in the cells when the grid is at most this many rows and columns
DARK_CELL = 0.55
MARKERS_PER_LINE = 10  # markers tell runs apart in greyscale; more would blot the line  # φ below this gets white text, above it black


def _module_order(modules: Sequence[str]) -> list[str]:
    """Unique module types in first-seen order."""
    return list(dict.fromkeys(modules))


def plot_similarity_heatmaps(
    result: SimilarityResult, labels: tuple[str, str] | None = None, modules: Sequence[str] | None = None
) -> Figure:
    """φ(i, j) = ‖U_Aᵢᵀ U_Bⱼ‖_F² / min(i, j), averaged over layers, one heatmap per module type, each with the
    chance level of two random subspaces (max(i, j)/dimension) written in its corner.

    Args:
        result: A similarity result.
        labels: Names of A (rows) and B (columns); derived from the tuned paths when omitted.
        modules: Module types to draw, in order; all found when omitted.

    Returns:
        The figure, one colour scale 0 … 1 for every panel.
    """
    name_a, name_b = labels or (run_label(result.tuned_a), run_label(result.tuned_b))
    names = list(modules) if modules is not None else list(result.by_module())
    with paper_style():
        fig, axes, _ = module_grid([short_module(m) for m in names], HEATMAP_PANEL_IN, sharey=False)
        columns = grid_shape(len(names))[1]
        image = None
        for index, (ax, module) in enumerate(zip(axes, names, strict=True)):
            rows, cols, grid = result.module_grid(module)
            image = ax.imshow(grid, cmap=HEATMAP_CMAP, vmin=0.0, vmax=1.0, origin="lower", aspect="auto")
            ax.set_xticks(range(len(cols)), [str(j) for j in cols], rotation=90 if len(cols) > 6 else 0)
            ax.set_yticks(range(len(rows)), [str(i) for i in rows])
            ax.grid(False)
            if len(rows) <= ANNOTATE_MAX_CELLS and len(cols) <= ANNOTATE_MAX_CELLS:
                _annotate(ax, grid)
            _chance_note(ax, result, module, rows, cols)
            ax.set_xlabel(f"j ({name_b})")
            if index % columns == 0:
                ax.set_ylabel(f"i ({name_a})")
        if image is not None:
            fig.colorbar(image, ax=axes, label="φ(i, j)", shrink=0.9, aspect=25)
    return fig


def _chance_note(
    ax: object, result: SimilarityResult, module: str, rows: Sequence[int], cols: Sequence[int]
) -> None:
    """The chance level of the panel's largest common size k ≤ 16, `chance φ(16,16) = 0.03`, in its corner."""
    common = [k for k in rows if k in cols and k <= CHANCE_SIZE]
    if not common:
        return
    k = max(common)
    chance = result.module_chance(k)[module]
    ax.text(  # type: ignore[attr-defined]
        0.03, 0.97, f"chance φ({k},{k}) = {chance:.2f}", transform=ax.transAxes,  # type: ignore[attr-defined]
        ha="left", va="top", fontsize=5.5, color="black", gid=CHANCE_GID,
        bbox={"boxstyle": "round,pad=0.2", "facecolor": "white", "alpha": 0.8, "linewidth": 0},
    )  # fmt: skip


def _annotate(ax: object, grid: np.ndarray) -> None:
    """φ written in each cell, in a colour that reads on the cell."""
    for (row, col), value in np.ndenumerate(grid):
        colour = "white" if value < DARK_CELL else "black"
        ax.text(col, row, f"{value:.2f}", ha="center", va="center", fontsize=5.5, color=colour)  # type: ignore[attr-defined]


def layer_counts(
    result: IntruderResult, module: str, epsilon: float | None = None
) -> tuple[list[int], list[int]]:
    """(layers, intruder counts at ε) of one module type, sorted by layer; ε defaults to the result's."""
    eps = result.epsilon if epsilon is None else epsilon
    points = sorted(
        (m.layer, count_intruders(m.max_cos, eps))
        for m in result.matrices
        if m.module == module and m.layer is not None
    )
    return [p[0] for p in points], [p[1] for p in points]


def plot_intruders_by_layer(
    results: Sequence[IntruderResult],
    labels: Sequence[str] | None = None,
    *,
    modules: Sequence[str] | None = None,
    epsilon: float | None = None,
) -> Figure:
    """Intruder count (top-k vectors of W' with max |cos| < ε) against layer, per module type, one line per run.

    Args:
        results: One IntruderResult per run (e.g. full fine-tuning and LoRA).
        labels: Legend names, one per result; derived from the tuned paths when omitted.
        modules: Module types to draw, in order; all found when omitted.
        epsilon: ε to count at; each result's own ε when omitted.

    Returns:
        The figure, count axis 0 … k shared by all panels.
    """
    shown = list(labels) if labels is not None else [run_label(r.tuned) for r in results]
    names = (
        list(modules)
        if modules is not None
        else _module_order([m.module for r in results for m in r.matrices])
    )
    top = max(r.top_k for r in results)
    with paper_style():
        fig, axes, spare = module_grid([short_module(m) for m in names], LAYER_PANEL_IN)
        columns = grid_shape(len(names))[1]
        for index, (ax, module) in enumerate(zip(axes, names, strict=True)):
            for i, (result, label) in enumerate(zip(results, shown, strict=True)):
                layers, counts = layer_counts(result, module, epsilon)
                if layers:
                    ax.plot(
                        layers,
                        counts,
                        color=run_color(i),
                        marker=run_marker(i),
                        linestyle=run_linestyle(i),
                        markersize=3,
                        markevery=max(1, len(layers) // MARKERS_PER_LINE),
                        linewidth=1.0,
                        label=label,
                    )
            ax.set_ylim(-0.4, top + 0.4)
            ax.yaxis.set_major_locator(MaxNLocator(integer=True, nbins=4))
            ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=4))
            ax.set_xlabel("layer")
            if index % columns == 0:
                eps_text = f"{epsilon:g}" if epsilon is not None else f"{results[0].epsilon:g}"
                ax.set_ylabel(f"intruders (ε = {eps_text})")
        place_legend(fig, axes, spare)
    return fig


def plot_retained_energy(
    result: ExtractResult, modules: Sequence[str] | None = None, energy: float | None = None
) -> Figure:
    """Retained energy Σ_{i≤k} σ_i² / Σ σ_i² of ΔW against the rank k, median over layers per module type.

    Dots mark the ranks written to the adapter (median per module type); a grey line marks τ of --energy.

    Args:
        result: An extraction result (its singular values give the whole curve).
        modules: Module types to draw, in order; all found when omitted.
        energy: Energy share to mark; the result's own τ when omitted.

    Returns:
        A single-column figure with a log rank axis.
    """
    names = list(modules) if modules is not None else _module_order([m.module for m in result.matrices])
    tau = result.energy if energy is None else energy
    with paper_style():
        fig = new_figure(SINGLE_COLUMN_IN, ENERGY_HEIGHT_IN)
        ax = fig.add_subplot()
        for i, module in enumerate(names):
            items = [m for m in result.matrices if m.module == module]
            length = min(len(m.singular_values) for m in items)
            curve = np.median(np.stack([m.energy_curve()[:length] for m in items]), axis=0)
            ranks = np.arange(1, length + 1)
            ax.plot(ranks, curve, color=run_color(i), linestyle=run_linestyle(i), label=short_module(module))
            chosen = int(np.median([m.rank for m in items]))
            ax.plot([chosen], [curve[min(chosen, length) - 1]], marker=run_marker(i), color=run_color(i))
        if tau is not None:
            ax.axhline(tau, color=REFERENCE_COLOR, linestyle="--", linewidth=0.8, label=f"τ = {tau:g}")
        ax.set_xscale("log")
        plain_log_axis(ax.xaxis)
        ax.set_ylim(0.0, 1.02)
        ax.set_xlabel("rank k")
        ax.set_ylabel("energy of ΔW retained")
        fig.legend(loc="outside lower center", ncols=4)
    return fig
