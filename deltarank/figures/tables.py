"""The comparison tables of `deltarank compare`, one per result family: per module type, a few numbers per run.

Spectrum: median ranks and their ratios; intruders: intruder counts; similarity: mean φ(i, i); extract: rank and
retained energy; placement: shares of ΔW in W₀'s top-k and bottom-k directions beside chance. Each table prints
aligned for a terminal and writes CSV with the raw numbers. The second column of every table but the
spectrum one counts the row's matrices (`matrices`); the spectrum table names the width min(m, n) `width` and
the Gaussian reference `gauss_e90` (`results.columns`).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from deltarank.analysis.results import (
    ExtractResult,
    IntruderResult,
    PlacementResult,
    SimilarityResult,
    SpectrumResult,
)
from deltarank.analysis.results.columns import GAUSS_E90, MATRICES, WIDTH
from deltarank.analysis.results.medians import median
from deltarank.analysis.results.placement import MATCHED_KEY
from deltarank.analysis.results.sparsity import MEASURES
from deltarank.errors import DeltarankError
from deltarank.figures.runs import as_runs, display_labels, energy_rank, module_order, result_labels

NOISE_KEY = "noise_floor"
ALL_ROW = "all"
PHI_SIZES = (1, 4, 16, 64)  # the subspace sizes i of the similarity table's φ(i, i)
FINE = 3  # decimals of shares (φ, retained energy, sparsity)
# The sparsity profile's measures -> column suffix: the shares of entries exactly unchanged, within the run's
# atol, within half an ulp of the base weight, and the numerical rank ÷ the width min(m, n).
SPARSITY_COLUMNS: dict[str, str] = dict(
    zip(MEASURES, ("zero", "atol", "ulp/2", f"rank/{WIDTH}"), strict=True)
)
# The placement table's columns per run at k = r₀.₉ of ΔW: (side, measure) -> column suffix.
PLACEMENT_COLUMNS: dict[tuple[str, str], str] = {
    ("left", "top"): "top L",
    ("left", "bottom"): "bottom L",
    ("left", "chance"): "chance L",
    ("right", "top"): "top R",
    ("right", "bottom"): "bottom R",
    ("right", "chance"): "chance R",
    ("left", "mean_cos2"): "cos² L",
}

Cell = str | int | float | None


@dataclass(frozen=True)
class CompareTable:
    """A small table: header names and rows of cells (None where a run lacks a value)."""

    columns: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]
    ratio_from: int = 0  # columns from this index on hold ratios (shown as `14.0x`); 0: none
    decimals: tuple[
        int | None, ...
    ] = ()  # per column: fixed decimals of its numbers; None or absent: default

    def to_text(self) -> str:
        """Aligned plain text for a terminal: text left, numbers right, `-` for missing values."""
        ratio = self.ratio_from or len(self.columns)
        places = [self.decimals[i] if i < len(self.decimals) else None for i in range(len(self.columns))]
        cells = [list(self.columns)] + [
            [_text(c, i >= ratio, places[i]) for i, c in enumerate(r)] for r in self.rows
        ]
        widths = [max(len(row[i]) for row in cells) for i in range(len(self.columns))]
        lines = []
        for row_index, row in enumerate(cells):
            parts = [cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row)]
            lines.append("  ".join(parts).rstrip())
            if row_index == 0:
                lines.append("  ".join("-" * w for w in widths))
        return "\n".join(lines) + "\n"

    def to_csv(self) -> str:
        """The same table as CSV with raw numbers (empty cells where a value is missing)."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(self.columns)
        for row in self.rows:
            writer.writerow(["" if c is None else round(c, 4) if isinstance(c, float) else c for c in row])
        return buffer.getvalue()


def _text(cell: Cell, is_ratio: bool, places: int | None = None) -> str:
    """A cell for the terminal: ratios as `14.0x`, whole numbers without decimals, medians to 0.1 (or the
    column's fixed decimals)."""
    if cell is None:
        return "-"
    if isinstance(cell, float) and places is not None:
        return f"{cell:.{places}f}"
    if isinstance(cell, float):
        if is_ratio:
            return f"{cell:.1f}x" if cell >= 1 else f"{cell:.2f}x"
        return f"{int(cell)}" if cell.is_integer() else f"{cell:.1f}"
    return str(cell)


def compare_table(
    results: SpectrumResult | Sequence[SpectrumResult],
    labels: Sequence[str] | None = None,
    *,
    lora_rank: int | None = None,
) -> CompareTable:
    """Per module type: the width min(m, n) (`width`), the Gaussian r₀.₉ (`gauss_e90`), and per run the median
    r₀.₉ and noise-floor rank; per run the medians of the sparsity profile when a result has one (`<label> zero`,
    `atol`, `ulp/2`, `rank/width`); then ratios.

    Ratios are median r₀.₉ of each run divided by the first run's (`<label>/<first>`), or by the LoRA rank
    when `lora_rank` is given (`<label>/r`). The last row, `all`, takes the medians over every matrix.

    Raises:
        DeltarankError: `lora_rank` is not positive, or a result has no matrices.
    """
    runs = as_runs(results, labels)
    if lora_rank is not None and lora_rank < 1:
        raise DeltarankError(f"--lora-rank must be a positive integer, got {lora_rank}")
    for run in runs:
        if not run.result.matrices:
            raise DeltarankError(f"{run.result.tuned}: the result holds no matrices")
    names = display_labels(runs)
    columns = ["module", WIDTH, GAUSS_E90]
    for name in names:
        columns += [f"{name} e90", f"{name} noise"]
    profiled = any(m.sparsity is not None for r in runs for m in r.result.matrices)
    if profiled:
        columns += [f"{name} {short}" for name in names for short in SPARSITY_COLUMNS.values()]
    ratio_from = len(columns)
    ratio_names = names if lora_rank is not None else names[1:]
    suffix = "/r" if lora_rank is not None else f"/{names[0]}"
    columns += [f"{name}{suffix}" for name in ratio_names]
    rows: list[tuple[Cell, ...]] = []
    for module in [*module_order([r.result for r in runs]), ALL_ROW]:
        mats = [[m for m in r.result.matrices if module in (ALL_ROW, m.module)] for r in runs]
        everything = [m for group in mats for m in group]
        dims = {min(m.shape) for m in everything}
        row: list[Cell] = [
            module,
            dims.pop() if len(dims) == 1 else None,
            median([float(m.random_energy_90) for m in everything]),
        ]
        e90 = [median([energy_rank(m) for m in group]) for group in mats]
        for value, group in zip(e90, mats, strict=True):
            row += [value, median(m.ranks.get(NOISE_KEY) for m in group)]
        for group in mats if profiled else []:
            row += [median(getattr(m.sparsity, key, None) for m in group) for key in SPARSITY_COLUMNS]
        for value in e90 if lora_rank is not None else e90[1:]:
            base = float(lora_rank) if lora_rank is not None else e90[0]
            row.append(value / base if value is not None and base else None)
        rows.append(tuple(row))
    first = ratio_from - len(SPARSITY_COLUMNS) * len(names) if profiled else ratio_from
    decimals = tuple(FINE if first <= i < ratio_from else None for i in range(len(columns)))
    return CompareTable(columns=tuple(columns), rows=tuple(rows), ratio_from=ratio_from, decimals=decimals)


def _modules(
    results: Sequence[IntruderResult]
    | Sequence[SimilarityResult]
    | Sequence[ExtractResult]
    | Sequence[PlacementResult],
) -> list[str]:
    """Module types in first-seen order over all results, then the row `all`."""
    order: dict[str, None] = {}
    for result in results:
        for m in result.matrices:
            order.setdefault(m.module, None)
    return [*order, ALL_ROW]


def _row_groups(results: Sequence[Any], module: str) -> tuple[list[list[Any]], int | None]:
    """Per result, its matrices of one row (a module type, or every matrix for `all`), and the row's matrix
    count (`matrices`) when every result that has the module agrees on it (else None)."""
    groups = [[m for m in r.matrices if module in (ALL_ROW, m.module)] for r in results]
    counts = {len(g) for g in groups if g}
    return groups, counts.pop() if len(counts) == 1 else None


def _check_matrices(
    results: Sequence[IntruderResult] | Sequence[ExtractResult] | Sequence[PlacementResult],
) -> None:
    for result in results:
        if not result.matrices:
            raise DeltarankError(f"{result.tuned}: the result holds no matrices")


def intruder_table(results: Sequence[IntruderResult], labels: Sequence[str] | None = None) -> CompareTable:
    """Per module type: `matrices`, and per run the intruders at the run's ε (`<label> ε=<ε>`: the sum over the
    layers) and the most in one matrix (`<label> max`). The row `all` sums every matrix.

    Raises:
        DeltarankError: the labels do not match the results, or a result has no matrices.
    """
    names = result_labels(results, labels)
    _check_matrices(results)
    columns = ["module", MATRICES]
    for name, result in zip(names, results, strict=True):
        columns += [f"{name} ε={result.epsilon:g}", f"{name} max"]
    rows: list[tuple[Cell, ...]] = []
    for module in _modules(results):
        groups = [[m.count for m in r.matrices if module in (ALL_ROW, m.module)] for r in results]
        sizes = {len(g) for g in groups if g}
        row: list[Cell] = [module, sizes.pop() if len(sizes) == 1 else None]
        for counts in groups:
            row += [sum(counts), max(counts)] if counts else [None, None]
        rows.append(tuple(row))
    return CompareTable(columns=tuple(columns), rows=tuple(rows))


def similarity_table(
    results: Sequence[SimilarityResult], labels: Sequence[str] | None = None, sizes: Sequence[int] = PHI_SIZES
) -> CompareTable:
    """Per module type: `matrices`, and per file the mean φ(i, i) over its layers for the sizes i in `sizes`
    that some file stores (`<label> φ(i,i)`). The row `all` averages over every matrix.

    Raises:
        DeltarankError: the labels do not match the results, or no file stores any of the sizes.
    """
    names = result_labels(results, labels)
    shown = [i for i in sizes if any(r.module_means(i) for r in results)]
    if not shown:
        stored = sorted({i for r in results for m in r.matrices for i in m.tops_a})
        raise DeltarankError(
            f"no similarity result stores φ(i, i) for i in {', '.join(map(str, sizes))} (stored: {stored})"
        )
    columns = ["module", MATRICES] + [f"{name} φ({i},{i})" for name in names for i in shown]
    rows: list[tuple[Cell, ...]] = []
    for module in _modules(results):
        groups, count = _row_groups(results, module)
        row: list[Cell] = [module, count]
        for group in groups:
            for i in shown:
                values = [v for m in group if (v := m.phi(i, i)) is not None]
                row.append(float(sum(values) / len(values)) if values else None)
        rows.append(tuple(row))
    return CompareTable(
        columns=tuple(columns), rows=tuple(rows), decimals=(None, None) + (FINE,) * (len(columns) - 2)
    )


def extract_table(results: Sequence[ExtractResult], labels: Sequence[str] | None = None) -> CompareTable:
    """Per module type: `matrices`, and per run the median rank written (`<label> rank`) and the mean
    retained energy Σ_{i≤k} σ_i² / Σ σ_i² (`<label> energy`). The row `all` takes every matrix.

    Raises:
        DeltarankError: the labels do not match the results, or a result has no matrices.
    """
    names = result_labels(results, labels)
    _check_matrices(results)
    columns = ["module", MATRICES]
    decimals: list[int | None] = [None, None]
    for name in names:
        columns += [f"{name} rank", f"{name} energy"]
        decimals += [None, FINE]
    rows: list[tuple[Cell, ...]] = []
    for module in _modules(results):
        groups, count = _row_groups(results, module)
        row: list[Cell] = [module, count]
        for group in groups:
            energy = [m.retained_energy for m in group]
            row += [
                median(float(m.rank) for m in group),
                float(sum(energy) / len(energy)) if energy else None,
            ]
        rows.append(tuple(row))
    return CompareTable(columns=tuple(columns), rows=tuple(rows), decimals=tuple(decimals))


def placement_table(results: Sequence[PlacementResult], labels: Sequence[str] | None = None) -> CompareTable:
    """Per module type: `matrices`, and per run the medians over its layers, at k = each ΔW's r₀.₉, of the
    shares of ‖ΔW‖² in W₀'s top-k and bottom-k left and right directions, their chance k/m and k/n, the mean
    cos² of the left principal angles and the relative change of σ₁ (`<label> Δσ1`). The row `all` takes every
    matrix.

    Raises:
        DeltarankError: the labels do not match the results, or a result has no matrices.
    """
    names = result_labels(results, labels)
    _check_matrices(results)
    columns = ["module", MATRICES]
    for name in names:
        columns += [f"{name} {suffix}" for suffix in PLACEMENT_COLUMNS.values()] + [f"{name} Δσ1"]
    rows: list[tuple[Cell, ...]] = []
    for module in _modules(results):
        groups, count = _row_groups(results, module)
        row: list[Cell] = [module, count]
        for group in groups:
            entries = [s for m in group if (s := m.at(MATCHED_KEY)) is not None]
            row += [median(s.value(side, measure) for s in entries) for side, measure in PLACEMENT_COLUMNS]
            row.append(median(m.sigma_change[0] if m.sigma_change else None for m in group))
        rows.append(tuple(row))
    return CompareTable(
        columns=tuple(columns), rows=tuple(rows), decimals=(None, None) + (FINE,) * (len(columns) - 2)
    )
