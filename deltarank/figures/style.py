"""One paper style for every deltarank figure: sizes, fonts, a colour-blind-safe palette.

Figures are drawn at their final printed size (single column 3.3 in, double column 7 in), so font sizes in
points are the sizes a reader sees. The palette is Okabe & Ito (2008), safe for the common colour-vision
deficiencies; runs are also told apart by marker and line style, so the figures survive greyscale printing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from cycler import cycler
from matplotlib import rc_context
from matplotlib.axis import Axis
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

if TYPE_CHECKING:
    from matplotlib.typing import RcKeyType

SINGLE_COLUMN_IN = 3.3
DOUBLE_COLUMN_IN = 7.0

# Okabe-Ito: blue, vermillion, bluish green, orange, reddish purple, sky blue, yellow, black.
PALETTE: tuple[str, ...] = (
    "#0072B2",
    "#D55E00",
    "#009E73",
    "#E69F00",
    "#CC79A7",
    "#56B4E9",
    "#F0E442",
    "#000000",
)
REFERENCE_COLOR = "#7F7F7F"  # Gaussian reference and thresholds: neutral grey
LORA_RANK_COLOR = "#000000"
# Horizontal and curve references, the same in every figure.
REFERENCE_STYLE: dict[str, Any] = {
    "color": REFERENCE_COLOR,
    "linestyle": (0, (3, 1.5)),
    "linewidth": 1.0,
    "zorder": 1,
}
GAUSSIAN_LABEL = "Gaussian r₀.₉"  # the r₀.₉ of a Gaussian ΔW of the same shape (`random_energy_90`)
LORA_RANK_STYLE: dict[str, Any] = {"color": LORA_RANK_COLOR, "linestyle": ":", "linewidth": 1.0, "zorder": 1}
# Nine markers against eight colours: the ninth run differs from the first (a black star marks base models).
MARKERS: tuple[str, ...] = ("o", "s", "^", "D", "v", "P", "X", "<", "h")
LINESTYLES: tuple[str, ...] = ("-", "--", "-.", ":")

STYLE: dict[RcKeyType, Any] = {
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans", "Arial", "Helvetica"],
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "legend.frameon": False,
    "axes.linewidth": 0.6,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.linewidth": 0.4,
    "grid.alpha": 0.35,
    "lines.linewidth": 1.2,
    "lines.markersize": 4,
    "xtick.major.width": 0.6,
    "ytick.major.width": 0.6,
    "xtick.minor.width": 0.4,
    "ytick.minor.width": 0.4,
    "figure.dpi": 100,
    "savefig.dpi": 300,
    "pdf.fonttype": 42,  # embed TrueType, not Type 3: journals ask for it
    "ps.fonttype": 42,
    "svg.hashsalt": "deltarank",  # stable ids inside SVG files
    "axes.prop_cycle": cycler(color=list(PALETTE)),
}


@contextmanager
def paper_style() -> Iterator[None]:
    """Apply the deltarank style for the duration of a `with` block (restores the caller's rcParams)."""
    with rc_context(STYLE):
        yield


def new_figure(width: float, height: float) -> Figure:
    """A figure with constrained layout, created without pyplot (no global state, nothing to close).

    Call inside `paper_style()` so that the artists pick up the style.
    """
    return Figure(figsize=(width, height), layout="constrained")


def run_color(index: int) -> str:
    """Colour of the `index`-th run, the same in every figure."""
    return PALETTE[index % len(PALETTE)]


def run_marker(index: int) -> str:
    """Marker of the `index`-th run, the same in every figure."""
    return MARKERS[index % len(MARKERS)]


def run_linestyle(index: int) -> str:
    """Line style of the `index`-th run, so lines differ in greyscale too."""
    return LINESTYLES[index % len(LINESTYLES)]


def plain_log_axis(axis: Axis) -> None:
    """Label a log axis with plain numbers (1, 10, 100) instead of powers of ten: ranks read as counts."""
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda value, _pos: plain_number(value)))
    axis.set_minor_formatter(NullFormatter())


def plain_number(value: float) -> str:
    """A tick label as a plain count: `500`, `2000`; from ten thousand on with a suffix (`20k`, `5M`, `1G`),
    so that the labels of a log axis spanning millions stay short enough not to run into each other."""
    for threshold, unit, suffix in ((1e9, 1e9, "G"), (1e6, 1e6, "M"), (1e4, 1e3, "k")):
        if abs(value) >= threshold:
            return f"{value / unit:g}{suffix}"
    return f"{value:g}"


def short_module(module: str) -> str:
    """A compact tick label for a module type: `gate_proj` -> `gate`, others unchanged."""
    return module.removesuffix("_proj") or module


def format_ratio(ratio: float) -> str:
    """The ratio text written on bars: `14×` from 10 up, `3.5×` below 10."""
    if ratio >= 9.95:
        return f"{ratio:.0f}×"
    return f"{ratio:.1f}×"
