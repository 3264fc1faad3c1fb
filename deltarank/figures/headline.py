"""Figure 3, the headline: how much of each matrix full fine-tuning's ΔW needs for 90% of its energy, beside
LoRA's, on the scale of the matrix's width.

One row per module type, on a linear rank axis from 0:

- full fine-tuning's r₀.₉: a dot at the median over layers with whiskers over the interquartile range (one
  dot per full run), labelled with its multiple of r and its share of the width (`12.8× r · 35%`);
- LoRA's measured r₀.₉ (when a LoRA result is given): a square with its whiskers, and the configured r as a
  vertical tick;
- the width min(m, n), which no ΔW can exceed (a dark stroke), and the r₀.₉ of a Gaussian matrix of that
  shape (a hollow diamond: what no low-rank structure at all looks like);
- the paper's band: Biderman et al.'s 10–100× of r = 16 was measured on 4096-wide matrices, which is 3.9–39%
  of the width; the band is shaded per row at that share of the row's width.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from deltarank.analysis.results import SpectrumResult
from deltarank.analysis.results.rank_claim import WIDTH_RANGE
from deltarank.analysis.results.rank_statistics import module_rank_statistics
from deltarank.errors import DeltarankError
from deltarank.figures.runs import Run, as_runs, display_labels, lora_rank_by_module, module_order
from deltarank.figures.style import REFERENCE_COLOR, SINGLE_COLUMN_IN, new_figure, paper_style, run_color

BASE_HEIGHT_IN = 0.95  # axis label and legend
ROW_HEIGHT_IN = 0.3  # per module type
RATIO_GID = "ratio"
BAND_GID = "paper_band"
WIDTH_GID = "width"
BAND_COLOR = "#e8e8e8"
WIDTH_COLOR = "#333333"
HALF_ROW = 0.38  # band and width stroke: the share of a row's height either side of its centre


def headline_numbers(
    runs: Sequence[Run], lora_rank: int | None = None
) -> tuple[list[str], list[Run], dict[str, int], dict[str, float], dict[str, int]]:
    """What the headline draws: module types, full fine-tuning runs, LoRA r, Gaussian r₀.₉ and width per
    module type.

    Raises:
        DeltarankError: no full fine-tuning (dense) result, or no LoRA rank (no adapter result, no option).
    """
    full = [run for run in runs if not run.is_adapter]
    if not full:
        raise DeltarankError("the headline figure needs a full fine-tuning result (dense ΔW); none given")
    r_by_module = lora_rank_by_module(runs, lora_rank)
    if not r_by_module:
        raise DeltarankError("the headline figure needs a LoRA rank: give a LoRA result or --lora-rank R")
    modules = [m for m in module_order([run.result for run in full]) if m in r_by_module]
    matrices = {m: [x for r in full for x in r.result.matrices if x.module == m] for m in modules}
    gaussian = {m: float(np.median([x.random_energy_90 for x in matrices[m]])) for m in modules}
    width = {m: min(matrices[m][0].shape) for m in modules}
    return modules, full, r_by_module, gaussian, width


def plot_headline(
    results: SpectrumResult | Sequence[SpectrumResult] | Sequence[Run],
    labels: Sequence[str] | None = None,
    *,
    lora_rank: int | None = None,
) -> Figure:
    """Dots of full fine-tuning's r₀.₉ (median, interquartile whiskers) per module type against the LoRA rank,
    the width, the Gaussian r₀.₉ and the paper's width-aware band.

    Args:
        results: Results of full fine-tuning runs, and optionally LoRA runs (they supply r and their measured
            r₀.₉).
        labels: Legend names, one per result; derived from the tuned paths when omitted.
        lora_rank: The LoRA rank r; taken from the first adapter result when omitted.

    Returns:
        The figure, single-column width, linear rank axis from 0.

    Raises:
        DeltarankError: no full fine-tuning result, or no LoRA rank.
    """
    runs = as_runs(results, labels)
    names = dict(zip(map(id, runs), display_labels(runs), strict=True))
    modules, full, r_by_module, gaussian, width = headline_numbers(runs, lora_rank)
    adapters = [run for run in runs if run.is_adapter]
    series = len(full) + (1 if adapters else 0)
    step = 0.5 / max(series, 1)  # vertical offset between the series of one row
    y = np.arange(len(modules), dtype=np.float64)
    with paper_style():
        fig = new_figure(
            SINGLE_COLUMN_IN, BASE_HEIGHT_IN + ROW_HEIGHT_IN * len(modules) * max(1.0, series / 2)
        )
        ax = fig.add_subplot()
        _draw_references(ax, modules, y, width, gaussian, r_by_module)
        for i, run in enumerate(full):
            offset = y + (i - (series - 1) / 2) * step
            label = f"full FT r₀.₉, {names[id(run)]}" if len(full) > 1 else "full FT r₀.₉"
            medians = _dots(ax, run, modules, offset, _full_color(i), "o", label)
            _write_ratios(ax, offset, medians, r_by_module, width, modules)
        if adapters:
            offset = y + (len(full) - (series - 1) / 2) * step
            _dots(ax, adapters[-1], modules, offset, run_color(1), "s", "LoRA r₀.₉")
        _format_axes(ax, modules, max(width.values()))
        fig.legend(loc="outside upper center", ncols=3, handlelength=1.0, columnspacing=0.7, fontsize=6)
    return fig


def _draw_references(
    ax: Axes,
    modules: list[str],
    y: np.ndarray,
    width: dict[str, int],
    gaussian: dict[str, float],
    r_by_module: dict[str, int],
) -> None:
    """Per row: the paper's band (3.9–39% of the width), the width stroke, the Gaussian r₀.₉, the LoRA r."""
    low, high = WIDTH_RANGE
    for i, module in enumerate(modules):
        w = width[module]
        band = Rectangle(
            (low * w, y[i] - HALF_ROW),
            (high - low) * w,
            2 * HALF_ROW,
            facecolor=BAND_COLOR,
            edgecolor="none",
            zorder=0,
            gid=BAND_GID,
            label="paper's band (3.9–39% of width)" if i == 0 else "_band",
        )
        ax.add_patch(band)
        ax.plot(
            [w, w],
            [y[i] - HALF_ROW, y[i] + HALF_ROW],
            color=WIDTH_COLOR,
            linewidth=1.6,
            solid_capstyle="butt",
            zorder=1,
            gid=WIDTH_GID,
            label="width" if i == 0 else "_width",
        )
    ax.scatter(
        [gaussian[m] for m in modules],
        y,
        marker="D",
        s=14,
        facecolors="none",
        edgecolors=REFERENCE_COLOR,
        linewidths=0.8,
        zorder=2,
        label="Gaussian r₀.₉",
    )
    ranks = {r_by_module[m] for m in modules}
    ax.scatter(
        [r_by_module[m] for m in modules],
        y,
        marker="|",
        s=60,
        color=run_color(1),
        linewidths=1.2,
        zorder=3,
        label=f"LoRA r = {ranks.pop()}" if len(ranks) == 1 else "LoRA r",
    )


def _dots(
    ax: Axes, run: Run, modules: list[str], offset: np.ndarray, color: str, marker: str, label: str
) -> np.ndarray:
    """Median r₀.₉ per module type with interquartile whiskers; returns the medians (NaN where unmeasured)."""
    stats = module_rank_statistics(run.result)
    spreads = [(stats.get(m) or {}).get("energy_90") for m in modules]
    medians = np.array([s["median"] if s else np.nan for s in spreads])
    below = np.array([s["median"] - s["q1"] if s else 0.0 for s in spreads])
    above = np.array([s["q3"] - s["median"] if s else 0.0 for s in spreads])
    ax.errorbar(
        medians,
        offset,
        xerr=np.vstack([below, above]),
        fmt=marker,
        markersize=3.5,
        color=color,
        ecolor=color,
        elinewidth=0.9,
        capsize=1.5,
        zorder=4,
        label=label,
    )
    return medians


def _format_axes(ax: Axes, modules: list[str], widest: int) -> None:
    """Linear rank axis from 0 to past the widest matrix, first module type on top."""
    ax.set_xlim(0, widest * 1.32)  # room right of the widest stroke for the ratio labels
    ax.set_ylim(len(modules) - 0.5, -0.5)
    ax.set_yticks(np.arange(len(modules)), modules)
    ax.tick_params(axis="y", length=0)
    ax.set_xlabel("r₀.₉ of ΔW (median, IQR over layers)")
    ax.grid(axis="y", visible=False)


def _full_color(index: int) -> str:
    """Full fine-tuning runs: blue first, then colours that are not LoRA's vermillion."""
    return run_color(0 if index == 0 else index + 1)


def _write_ratios(
    ax: Axes,
    y: np.ndarray,
    medians: np.ndarray,
    r_by_module: dict[str, int],
    width: dict[str, int],
    modules: list[str],
) -> None:
    """Write `12.8× r · 35%` (median r₀.₉ ÷ r, ÷ width) right of each row's width stroke."""
    for yi, value, module in zip(y, medians, modules, strict=True):
        if np.isfinite(value) and r_by_module[module] > 0:
            ax.annotate(
                f"{value / r_by_module[module]:.1f}× r · {value / width[module]:.0%}",
                (max(value, width[module]), yi),
                xytext=(3, 0),
                textcoords="offset points",
                ha="left",
                va="center",
                fontsize=6,
                gid=RATIO_GID,
            )
