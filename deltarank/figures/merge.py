"""Merge geometry of n deltas as heatmaps: per module type, the n × n subspace overlap φ(k, k) and TIES's
pairwise sign-conflict rate, each the median over the module type's matrices.

Left panel: φ(k, k) = ‖U_aᵀ U_b‖_F² / k (diagonal 1; two random k-dimensional subspaces of R^d give k/d).
Right panel: among the entries both trimmed deltas keep, the share of opposite signs (two deltas with
independent signs give 1/2; the diagonal is 0). Both on one 0 … 1 colour scale; deltas are named by their
tuned paths (`runs.derived_labels`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.image import AxesImage

from deltarank.analysis.results.merge import ModuleMerge, Table
from deltarank.analysis.results.similarity import SimilarityResult
from deltarank.errors import DeltarankError
from deltarank.figures.runs import derived_labels
from deltarank.figures.style import SINGLE_COLUMN_IN, new_figure, paper_style, short_module

PANEL_HEIGHT_IN = 1.6
HEATMAP_CMAP = "viridis"  # perceptually uniform and colour-blind safe, as the φ heatmaps
ANNOTATE_MAX = 6  # write the values in the cells up to this many deltas
DARK_CELL = 0.55  # values below it get white text, above it black
PANELS = ("overlap", "sign_conflict")


def table_array(table: Table) -> np.ndarray:
    """An n × n table as a float array, NaN where a value is None (drawn blank)."""
    return np.array([[np.nan if v is None else float(v) for v in row] for row in table], dtype=float)


def plot_merge_geometry(
    result: SimilarityResult, labels: Sequence[str] | None = None, modules: Sequence[str] | None = None
) -> Figure:
    """Per module type, heatmaps of the median n × n overlap φ(k, k) and pairwise sign-conflict rate.

    Args:
        result: A similarity result with merge geometry.
        labels: Names of the n deltas; derived from the tuned paths when omitted.
        modules: Module types to draw, in order; all found when omitted.

    Returns:
        The figure: one row per module type, overlap left, sign conflict right.

    Raises:
        DeltarankError: the result holds no merge geometry.
    """
    merge = result.merge
    if merge is None or not merge.modules:
        raise DeltarankError(
            "this similarity result holds no merge geometry (three or more TUNED, or --merge)"
        )
    names = list(labels) if labels is not None else derived_labels(list(merge.tuned))
    by_module = {m.module: m for m in merge.modules}
    shown = [by_module[m] for m in modules if m in by_module] if modules is not None else list(merge.modules)
    with paper_style():
        fig = new_figure(SINGLE_COLUMN_IN * 1.3, PANEL_HEIGHT_IN * len(shown) + 0.3)
        grid = fig.add_gridspec(len(shown), 2)
        image = None
        for row, module in enumerate(shown):
            for col, panel in enumerate(PANELS):
                ax = fig.add_subplot(grid[row, col])
                image = _heatmap(ax, table_array(getattr(module, panel)), names)
                ax.set_title(_title(module, panel))
        if image is not None:
            fig.colorbar(image, ax=fig.axes, label="median over layers", shrink=0.6, aspect=30)
    return fig


def _title(module: ModuleMerge, panel: str) -> str:
    name = short_module(module.module)
    if panel == "overlap":
        return f"{name}: φ({module.k:g},{module.k:g})"
    return f"{name}: sign conflict"


def _heatmap(ax: Axes, values: np.ndarray, names: Sequence[str]) -> AxesImage:
    """One n × n panel, 0 … 1, with the values written in the cells for small n."""
    image = ax.imshow(values, cmap=HEATMAP_CMAP, vmin=0.0, vmax=1.0, aspect="equal")
    ticks = range(len(names))
    ax.set_xticks(ticks, list(names), rotation=90)
    ax.set_yticks(ticks, list(names))
    ax.grid(False)
    if len(names) <= ANNOTATE_MAX:
        for (row, col), value in np.ndenumerate(values):
            if np.isfinite(value):
                colour = "white" if value < DARK_CELL else "black"
                ax.text(col, row, f"{value:.2f}", ha="center", va="center", fontsize=5.5, color=colour)
    return image
