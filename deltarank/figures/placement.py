"""Where ΔW lands among W₀'s singular directions: the share of ‖ΔW‖_F² in W₀'s top-k and bottom-k directions
against layer, one panel per module type, with the chance level k/d of a random ΔW.

Blue: W₀'s top-k (principal) directions, vermillion: its bottom-k (minor) ones; solid: left (output space),
dashed: right (input space); light grey: chance k/m (left) and k/n (right), which a ΔW with no preferred
direction gets in any k-dimensional subspace. A share above chance is attraction to those directions, one below it
avoidance. k is ΔW's own r₀.₉ by default (it varies by layer, and so does the chance line), or a size of the
run's `--sizes`. Matrices outside the transformer blocks have no layer and are left out.
"""

from __future__ import annotations

from collections.abc import Sequence

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from deltarank.analysis.results.placement import MATCHED_KEY, SIDES, MatrixPlacement, PlacementResult
from deltarank.errors import DeltarankError
from deltarank.figures.panels import grid_shape, module_grid, place_legend
from deltarank.figures.style import DOUBLE_COLUMN_IN, PALETTE, paper_style, short_module

PANEL_HEIGHT_IN = 1.35
MARKERS_PER_LINE = 8  # markers tell the series apart in greyscale; more would blot the line
# (colour, marker) of W₀'s top-k and bottom-k directions; line style per side.
DIRECTIONS: dict[str, tuple[str, str]] = {"top": (PALETTE[0], "o"), "bottom": (PALETTE[1], "s")}
SIDE_STYLE: dict[str, str] = {"left": "-", "right": "--"}
SIDE_DIMENSION: dict[str, str] = {"left": "m", "right": "n"}
CHANCE_GID = "chance"
NEWLINE = "\n"
CHANCE_COLOR = "#BDBDBD"  # lighter than the reference grey: a band the data lines cross


def size_label(key: str) -> str:
    """How the legend names a subspace size key: `k = r₀.₉ of ΔW` or `k = 8`."""
    return "k = r₀.₉ of ΔW" if key == MATCHED_KEY else f"k = {key.removeprefix('k')}"


def layer_series(result: PlacementResult, module: str, key: str) -> list[tuple[int, MatrixPlacement]]:
    """(layer, record) of one module type's matrices that hold the size `key`, sorted by layer."""
    found = [
        (m.layer, m)
        for m in result.matrices
        if m.module == module and m.layer is not None and m.at(key) is not None
    ]
    return sorted(found, key=lambda item: item[0])


def plot_placement(
    result: PlacementResult, key: str = MATCHED_KEY, modules: Sequence[str] | None = None
) -> Figure:
    """Share of ‖ΔW‖_F² in W₀'s top-k and bottom-k left and right singular directions against layer, per module
    type, with the chance level k/d.

    Args:
        result: A placement result.
        key: Subspace size to draw: `energy_90` (k = each ΔW's r₀.₉, the default) or `k<size>`.
        modules: Module types to draw, in order; every one with layered matrices when omitted.

    Returns:
        The figure, share axis 0 … 1 shared by all panels.

    Raises:
        DeltarankError: no matrix inside the transformer blocks holds `key`.
    """
    layered = dict.fromkeys(m.module for m in result.matrices if layer_series(result, m.module, key))
    names = list(modules) if modules is not None else list(layered)
    if not names:
        raise DeltarankError(f"no matrix of {result.tuned} inside the transformer blocks holds k {key!r}")
    with paper_style():
        fig, axes, spare = module_grid([short_module(m) for m in names], PANEL_HEIGHT_IN)
        columns = grid_shape(len(names))[1]
        for index, (ax, module) in enumerate(zip(axes, names, strict=True)):
            _draw_panel(ax, layer_series(result, module, key), key)
            ax.set_ylim(-0.02, 1.02)
            ax.set_yticks([0.0, 0.5, 1.0])
            ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=4))
            ax.set_xlabel("layer")
            if index % columns == 0:
                ax.set_ylabel("share of ‖ΔW‖²")
        place_legend(fig, axes, spare)
        narrow = fig.get_figwidth() < DOUBLE_COLUMN_IN  # one or two panels a row: the title takes two lines
        title = (
            f"ΔW in W₀'s top-k and bottom-k singular directions{NEWLINE if narrow else ', '}{size_label(key)}"
        )
        fig.suptitle(title, fontsize=8)
    return fig


def _draw_panel(ax: Axes, series: list[tuple[int, MatrixPlacement]], key: str) -> None:
    """The four shares against layer, then the chance lines k/m (left) and k/n (right)."""
    layers = [layer for layer, _ in series]
    entries = [m.at(key) for _, m in series]
    every = max(1, len(layers) // MARKERS_PER_LINE)
    for direction, (colour, marker) in DIRECTIONS.items():
        for side in SIDES:
            values = [None if e is None else e.value(side, direction) for e in entries]
            ax.plot(
                layers,
                [float("nan") if v is None else v for v in values],  # a gap where ΔW = 0
                color=colour,
                marker=marker,
                markersize=2.5,
                markevery=every,
                markerfacecolor=colour if side == "left" else "white",
                linestyle=SIDE_STYLE[side],
                linewidth=1.0,
                label=f"{direction}-k, {side}",
            )
    for side in SIDES:  # behind the data, wide and light; on a square matrix the two coincide
        line = ax.plot(
            layers,
            [float("nan") if e is None else e.chance(side) for e in entries],
            color=CHANCE_COLOR,
            linestyle=SIDE_STYLE[side],
            linewidth=1.8,
            zorder=1,
            label=f"chance k/{SIDE_DIMENSION[side]}, {side}",
        )
        line[0].set_gid(CHANCE_GID)
