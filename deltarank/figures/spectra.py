"""Figure 1: normalised singular values and cumulative energy of ΔW, per module type, against a Gaussian.

Each run is one line per panel: the median over the layers of σ_i/σ_1 (top, log scale) and of the cumulative
energy Σ_{j≤i} σ_j² / Σ_j σ_j² (bottom), both against i/n with n = min(rows, cols); a band spans the layers'
interquartile range. The dashed grey line is a Gaussian matrix of the same shape (Marchenko–Pastur law,
from `deltarank.analysis.maths.reference`). Markers on the 90% line sit at each run's median r₀.₉ / n.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from deltarank.analysis.maths.reference import gaussian_singular_values, random_energy_rank
from deltarank.analysis.results import MatrixSpectrum, SpectrumResult
from deltarank.figures.panels import grid_shape, legend_below
from deltarank.figures.runs import ENERGY_TAU, Run, as_runs, display_labels, energy_rank, module_order
from deltarank.figures.style import (
    DOUBLE_COLUMN_IN,
    REFERENCE_COLOR,
    SINGLE_COLUMN_IN,
    new_figure,
    paper_style,
    run_color,
    run_linestyle,
    run_marker,
)

LOG_FLOOR = 1e-4  # lowest σ_i/σ_1 shown; smaller values are numerically zero for the reader
CELL_HEIGHT_IN = 2.1
REFERENCE_LABEL = "Gaussian, same shape"


def normalised_curves(singular_values: Sequence[float] | np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(σ_i/σ_1, cumulative energy) of one spectrum, zero-padded to length n (a LoRA delta has r values)."""
    s = np.zeros(n, dtype=np.float64)
    values = np.abs(np.asarray(singular_values, dtype=np.float64))[:n]
    s[: values.size] = values  # (n,)
    top, total = (s[0], float(np.sum(s**2))) if n else (0.0, 0.0)
    if top <= 0 or total <= 0:
        return np.zeros(n), np.zeros(n)
    return s / top, np.cumsum(s**2) / total


def _group_curves(matrices: Sequence[MatrixSpectrum], grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-matrix curves interpolated on `grid` (i/n); arrays of shape (matrices, len(grid)) each."""
    sigma_rows, energy_rows = [], []
    for m in matrices:
        n = min(m.shape)
        sig, cum = normalised_curves(m.singular_values, n)
        x = (np.arange(n) + 1) / n
        sigma_rows.append(np.interp(grid, x, sig))
        energy_rows.append(np.interp(grid, x, cum))
    return np.vstack(sigma_rows), np.vstack(energy_rows)


def _modal_shape(runs: Sequence[Run], module: str) -> tuple[int, int]:
    shapes = Counter(m.shape for run in runs for m in run.result.matrices if m.module == module)
    rows, cols = shapes.most_common(1)[0][0]
    return int(rows), int(cols)


def _draw_module(
    ax_sigma: Axes, ax_energy: Axes, runs: Sequence[Run], labels: list[str], module: str
) -> float:
    """Draw one module type's two panels; returns the smallest positive σ_i/σ_1 drawn."""
    rows, cols = _modal_shape(runs, module)
    n = min(rows, cols)
    grid = (np.arange(n) + 1) / n
    smallest = 1.0
    for i, (run, label) in enumerate(zip(runs, labels, strict=True)):
        matrices = [m for m in run.result.matrices if m.module == module]
        if not matrices:
            continue
        sigma, energy = _group_curves(matrices, grid)
        style: dict[str, Any] = {"color": run_color(i), "linestyle": run_linestyle(i)}
        sig_med = np.median(sigma, axis=0)
        shown = np.where(sig_med > 0, sig_med, np.nan)
        ax_sigma.plot(grid, shown, label=label, **style)
        if len(matrices) > 1:
            low, high = np.percentile(energy, [25, 75], axis=0)
            ax_energy.fill_between(grid, low, high, color=run_color(i), alpha=0.18, linewidth=0)
        ax_energy.plot(grid, np.median(energy, axis=0), label=label, **style)
        r90 = float(np.median([energy_rank(m) for m in matrices]))
        ax_energy.plot(
            [r90 / n],
            [ENERGY_TAU],
            linestyle="none",
            marker=run_marker(i),
            color=run_color(i),
            markeredgecolor="white",
            markeredgewidth=0.5,
            zorder=4,
            label="_r90",
        )
        if np.any(sig_med > 0):
            smallest = min(smallest, float(np.min(sig_med[sig_med > 0])))
    ref_sig, ref_energy = normalised_curves(gaussian_singular_values(rows, cols), n)
    ref_style: dict[str, Any] = {
        "color": REFERENCE_COLOR,
        "linestyle": (0, (3, 1.5)),
        "linewidth": 1.0,
        "zorder": 1,
    }
    ax_sigma.plot(grid, np.where(ref_sig > 0, ref_sig, np.nan), label=REFERENCE_LABEL, **ref_style)
    ax_energy.plot(grid, ref_energy, label=REFERENCE_LABEL, **ref_style)
    ref_r90 = random_energy_rank(rows, cols, ENERGY_TAU)
    ax_energy.plot(
        [ref_r90 / n],
        [ENERGY_TAU],
        linestyle="none",
        marker="|",
        markersize=7,
        color=REFERENCE_COLOR,
        zorder=3,
        label="_r90",
    )
    ax_energy.axhline(ENERGY_TAU, color=REFERENCE_COLOR, linewidth=0.6, linestyle=":", zorder=0, label="_tau")
    return smallest


def plot_spectra(
    results: SpectrumResult | Sequence[SpectrumResult] | Sequence[Run],
    labels: Sequence[str] | None = None,
    *,
    modules: Sequence[str] | None = None,
) -> Figure:
    """Normalised singular values and cumulative energy of ΔW per module type, one line per run.

    Args:
        results: One result, several (one per run), or prepared runs.
        labels: Legend names, one per result; derived from the tuned paths when omitted.
        modules: Module types to draw, in order; all found when omitted.

    Returns:
        The figure: per module type a σ_i/σ_1 panel above a cumulative-energy panel.
    """
    runs = as_runs(results, labels)
    names = list(modules) if modules is not None else module_order([r.result for r in runs])
    shown_labels = display_labels(runs)
    n_rows, n_cols = grid_shape(len(names))
    with paper_style():
        width = SINGLE_COLUMN_IN if n_cols == 1 else DOUBLE_COLUMN_IN
        fig = new_figure(width, CELL_HEIGHT_IN * n_rows)
        outer = fig.add_gridspec(n_rows, n_cols)
        sigma_axes: list[Axes] = []
        energy_axes: list[Axes] = []
        smallest = 1.0
        for j, module in enumerate(names):
            cell = outer[j // n_cols, j % n_cols].subgridspec(2, 1, hspace=0.08)
            first = sigma_axes[0] if sigma_axes else None
            ax_sigma = fig.add_subplot(cell[0], sharex=first, sharey=first)
            ax_energy = fig.add_subplot(
                cell[1], sharex=ax_sigma, sharey=energy_axes[0] if energy_axes else None
            )
            smallest = min(smallest, _draw_module(ax_sigma, ax_energy, runs, shown_labels, module))
            _label_cell(ax_sigma, ax_energy, module, first_column=j % n_cols == 0)
            sigma_axes.append(ax_sigma)
            energy_axes.append(ax_energy)
        if sigma_axes:
            sigma_axes[0].set_yscale("log")
            sigma_axes[0].set_ylim(max(LOG_FLOOR, smallest * 0.5), 1.5)
            energy_axes[0].set_ylim(0, 1.04)
            energy_axes[0].set_yticks([0, 0.5, 1])
            energy_axes[0].set_xlim(0, 1)
        _legend(fig, sigma_axes, n_rows * n_cols - len(names), outer, n_rows, n_cols)
    return fig


def _label_cell(ax_sigma: Axes, ax_energy: Axes, module: str, first_column: bool) -> None:
    ax_sigma.set_title(module)
    ax_sigma.tick_params(labelbottom=False)
    ax_energy.set_xlabel("i / n")
    if first_column:
        ax_sigma.set_ylabel("σᵢ / σ₁")
        ax_energy.set_ylabel("cum. energy")
    else:
        ax_sigma.tick_params(labelleft=False)
        ax_energy.tick_params(labelleft=False)


def _legend(fig: Figure, axes: list[Axes], free_cells: int, outer: object, n_rows: int, n_cols: int) -> None:
    """One legend: in the last free grid cell when there is one, else below the panels."""
    if not axes:
        return
    handles, names = axes[0].get_legend_handles_labels()
    for ax in axes[1:]:
        for handle, name in zip(*ax.get_legend_handles_labels(), strict=True):
            if name not in names:
                handles.append(handle)
                names.append(name)
    handles.append(Line2D([], [], linestyle="none", marker="o", color="black", label="median r₀.₉"))
    handles.append(Patch(facecolor="black", alpha=0.18, label="layers, 25–75%"))
    names += ["median r₀.₉ / n", "layers, 25–75%"]
    if free_cells > 0:
        spare = fig.add_subplot(outer[n_rows - 1, n_cols - 1])  # type: ignore[index]
        spare.set_axis_off()
        spare.legend(handles, names, loc="center")
    else:
        legend_below(fig, handles, names)
