"""Figure 3, the headline: the rank full fine-tuning needs for 90% of ΔW's energy, next to the LoRA rank.

For each module type: a bar at the median r₀.₉ of each full fine-tuning run, a bar at the LoRA rank r, and
an outlined bar at r₀.₉ of a Gaussian matrix of the same shape (what "no low-rank structure" looks like).
The ratio median r₀.₉ / r is written at the end of each full fine-tuning bar ("14×"); the rank axis is logarithmic.
This is Biderman et al. (2024)'s "full fine-tuning needs 10–100× the LoRA rank" figure.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from deltarank.analysis.results import SpectrumResult
from deltarank.errors import DeltarankError
from deltarank.figures.runs import Run, as_runs, display_labels, lora_rank_by_module, medians, module_order
from deltarank.figures.style import (
    REFERENCE_COLOR,
    SINGLE_COLUMN_IN,
    format_ratio,
    new_figure,
    paper_style,
    plain_log_axis,
    run_color,
)

BASE_HEIGHT_IN = 0.9  # axis label and legend
ROW_HEIGHT_IN = 0.34  # per module type, for three bars: keeps a 6.5 pt ratio label inside its bar's row
GROUP_WIDTH = 0.8  # share of the space between module types that a group of bars fills
RIGHT_ROOM = 3.0  # x-axis head room (a factor on the log axis) for the ratio labels
RATIO_GID = "ratio"
GAUSSIAN_BAR_STYLE: dict[str, Any] = {
    "facecolor": "none",
    "edgecolor": REFERENCE_COLOR,
    "linewidth": 0.8,
    "hatch": "/////",
    "zorder": 2,
}


def headline_numbers(
    runs: Sequence[Run], lora_rank: int | None = None
) -> tuple[list[str], list[Run], dict[str, int], dict[str, float]]:
    """What the headline draws: module types, full fine-tuning runs, LoRA r and Gaussian r₀.₉ per module.

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
    gaussian = {
        module: float(
            np.median([m.random_energy_90 for r in full for m in r.result.matrices if m.module == module])
        )
        for module in modules
    }
    return modules, full, r_by_module, gaussian


def plot_headline(
    results: SpectrumResult | Sequence[SpectrumResult] | Sequence[Run],
    labels: Sequence[str] | None = None,
    *,
    lora_rank: int | None = None,
) -> Figure:
    """Bars of the median r₀.₉ of full fine-tuning against the LoRA rank r per module type, ratio written on.

    Bars are horizontal (one row of bars per module type, first module on top), so module names and the
    ratio labels ("14×", at the end of each full fine-tuning bar) never collide, at single-column width.

    Args:
        results: Results of full fine-tuning runs, and optionally LoRA runs (they supply r).
        labels: Legend names, one per result; derived from the tuned paths when omitted.
        lora_rank: The LoRA rank r; taken from the first adapter result when omitted.

    Returns:
        The figure, single-column width, rank axis logarithmic.

    Raises:
        DeltarankError: no full fine-tuning result, or no LoRA rank.
    """
    runs = as_runs(results, labels)
    names = dict(zip(map(id, runs), display_labels(runs), strict=True))
    modules, full, r_by_module, gaussian = headline_numbers(runs, lora_rank)
    bars_per_group = len(full) + 2
    bar = GROUP_WIDTH / bars_per_group
    y = np.arange(len(modules), dtype=np.float64)
    lora_values = np.array([r_by_module[m] for m in modules], dtype=np.float64)
    gauss_values = np.array([gaussian[m] for m in modules])
    with paper_style():
        fig = new_figure(SINGLE_COLUMN_IN, BASE_HEIGHT_IN + ROW_HEIGHT_IN * len(modules) * bars_per_group / 3)
        ax = fig.add_subplot()
        right = max(float(np.max(gauss_values)), float(np.max(lora_values)))
        for i, run in enumerate(full):
            run_medians = medians(run.result)
            values = np.array([run_medians.get(m, np.nan) for m in modules])
            offsets = y - GROUP_WIDTH / 2 + bar * (i + 0.5)
            label = f"full FT r₀.₉, {names[id(run)]}" if len(full) > 1 else "full FT r₀.₉ (median)"
            ax.barh(offsets, values, bar, color=_full_color(i), label=label, zorder=2)
            _write_ratios(ax, offsets, values, lora_values)
            right = max(right, float(np.nanmax(values)))
        lora_label = _lora_label(r_by_module, modules)
        ax.barh(
            y - GROUP_WIDTH / 2 + bar * (len(full) + 0.5),
            lora_values,
            bar,
            color=run_color(1),
            label=lora_label,
            zorder=2,
        )
        ax.barh(
            y - GROUP_WIDTH / 2 + bar * (len(full) + 1.5),
            gauss_values,
            bar,
            label="Gaussian r₀.₉",
            **GAUSSIAN_BAR_STYLE,
        )
        _format_axes(ax, modules, right)
        fig.legend(
            loc="outside upper center", ncols=1 if len(full) > 1 else 2, handlelength=1.2, columnspacing=1.0
        )
    return fig


def _format_axes(ax: Axes, modules: list[str], right: float) -> None:
    """Log rank axis with head room for the ratio labels, first module type on top."""
    ax.set_xscale("log")
    plain_log_axis(ax.xaxis)
    ax.set_xlim(1, right * RIGHT_ROOM)
    ax.set_ylim(len(modules) - 0.5, -0.5)
    ax.set_yticks(np.arange(len(modules)), modules)
    ax.tick_params(axis="y", length=0)
    ax.set_xlabel("rank for 90% of ΔW energy")
    ax.grid(axis="y", visible=False)


def _full_color(index: int) -> str:
    """Full fine-tuning runs: blue first, then colours that are not LoRA's vermillion."""
    return run_color(0 if index == 0 else index + 1)


def _lora_label(r_by_module: dict[str, int], modules: list[str]) -> str:
    ranks = {r_by_module[m] for m in modules}
    return f"LoRA r = {ranks.pop()}" if len(ranks) == 1 else "LoRA r"


def _write_ratios(ax: Axes, y: np.ndarray, values: np.ndarray, lora: np.ndarray) -> None:
    """Write r₀.₉ / r at the end of each bar, e.g. `14×` for 224 against 16."""
    for yi, value, r in zip(y, values, lora, strict=True):
        if np.isfinite(value) and r > 0:
            ax.annotate(
                format_ratio(value / r),
                (value, yi),
                xytext=(2, 0),
                textcoords="offset points",
                ha="left",
                va="center",
                fontsize=6.5,
                gid=RATIO_GID,
            )
