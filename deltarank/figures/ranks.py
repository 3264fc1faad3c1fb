"""Figure 2: rank by layer. r₀.₉ of ΔW against the layer index, one panel per module type, one line per run.

Horizontal references: the LoRA rank r (black, dotted) and r₀.₉ of a Gaussian matrix of the same shape
(grey, dashed; the `random_energy_90` stored with each matrix, median over the module type's layers).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from deltarank.analysis.results import SpectrumResult
from deltarank.figures.panels import grid_shape, log_rank_axis, lora_rank_line, module_grid, place_legend
from deltarank.figures.runs import ENERGY_KEY, Run, as_runs, display_labels, energy_rank, lora_rank_by_module
from deltarank.figures.runs import module_order as _module_order
from deltarank.figures.style import GAUSSIAN_LABEL, REFERENCE_STYLE, paper_style, run_color, run_marker

PANEL_HEIGHT_IN = 1.45
MARKERS_PER_LINE = 8  # markers only tell runs apart in greyscale; more would blot the line


def layer_ranks(run: Run, module: str, key: str = ENERGY_KEY) -> tuple[np.ndarray, np.ndarray]:
    """(layer indices, ranks) of one module type in one run, sorted by layer; matrices outside blocks skipped."""
    pairs = sorted(
        (m.layer, energy_rank(m, key))
        for m in run.result.matrices
        if m.module == module and m.layer is not None
    )
    layers = np.array([p[0] for p in pairs], dtype=np.int64)
    values = np.array([p[1] for p in pairs], dtype=np.float64)
    return layers, values


def plot_ranks_by_layer(
    results: SpectrumResult | Sequence[SpectrumResult] | Sequence[Run],
    labels: Sequence[str] | None = None,
    *,
    lora_rank: int | None = None,
    modules: Sequence[str] | None = None,
    key: str = ENERGY_KEY,
) -> Figure:
    """r₀.₉ (or another stored rank `key`) against layer index, per module type, one line per run.

    Args:
        results: One result, several (one per run), or prepared runs.
        labels: Legend names, one per result; derived from the tuned paths when omitted.
        lora_rank: LoRA rank r to mark; taken from an adapter result among `results` when omitted.
        modules: Module types to draw, in order; all found when omitted.
        key: Rank measure to plot (`energy_90`, `noise_floor`, ...).

    Returns:
        The figure, log-scaled rank axis shared by all panels.
    """
    runs = as_runs(results, labels)
    layered = {m.module for r in runs for m in r.result.matrices if m.layer is not None}
    found = [m for m in _module_order([r.result for r in runs]) if m in layered]  # lm_head etc. have no layer
    names = list(modules) if modules is not None else found
    shown = display_labels(runs)
    r_by_module = lora_rank_by_module(runs, lora_rank)
    with paper_style():
        fig, axes, spare = module_grid(names, PANEL_HEIGHT_IN)
        columns = grid_shape(len(names))[1]
        for j, (ax, module) in enumerate(zip(axes, names, strict=True)):
            _draw_panel(ax, runs, shown, module, key)
            lora_rank_line(ax, r_by_module, module)
            log_rank_axis(ax)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=4))
            ax.set_xlabel("layer")
            if j % columns == 0:
                ax.set_ylabel("r₀.₉" if key == ENERGY_KEY else key)
        place_legend(fig, axes, spare)
    return fig


def _draw_panel(ax: Axes, runs: Sequence[Run], labels: Sequence[str], module: str, key: str) -> None:
    """One line per run (markers thinned out), then the Gaussian r₀.₉ of the module's shape."""
    for i, (run, label) in enumerate(zip(runs, labels, strict=True)):
        layers, values = layer_ranks(run, module, key)
        if layers.size:
            every = max(1, layers.size // MARKERS_PER_LINE)
            ax.plot(
                layers,
                values,
                color=run_color(i),
                marker=run_marker(i),
                markersize=3,
                markevery=every,
                linewidth=1.0,
                label=label,
            )
    reference = [m.random_energy_90 for r in runs for m in r.result.matrices if m.module == module]
    if reference:
        ax.axhline(float(np.median(reference)), label=GAUSSIAN_LABEL, **REFERENCE_STYLE)
