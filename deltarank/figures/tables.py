"""The comparison table of `deltarank compare`: per module type, median ranks per run and their ratios."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass

from deltarank.analysis.results import SpectrumResult
from deltarank.analysis.results.medians import median
from deltarank.errors import DeltarankError
from deltarank.figures.runs import as_runs, display_labels, energy_rank, module_order

NOISE_KEY = "noise_floor"
ALL_ROW = "all"

Cell = str | int | float | None


@dataclass(frozen=True)
class CompareTable:
    """A small table: header names and rows of cells (None where a run lacks a value)."""

    columns: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]
    ratio_from: int = 0  # columns from this index on hold ratios (shown as `14.0x`); 0: none

    def to_text(self) -> str:
        """Aligned plain text for a terminal: text left, numbers right, `-` for missing values."""
        ratio = self.ratio_from or len(self.columns)
        cells = [list(self.columns)] + [[_text(c, i >= ratio) for i, c in enumerate(r)] for r in self.rows]
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


def _text(cell: Cell, is_ratio: bool) -> str:
    """A cell for the terminal: ratios as `14.0x`, whole numbers without decimals, medians to 0.1."""
    if cell is None:
        return "-"
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
    """Per module type: n, Gaussian r₀.₉, and per run the median r₀.₉ and noise-floor rank; then ratios.

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
    columns = ["module", "n", "gauss_e90"]
    for name in names:
        columns += [f"{name} e90", f"{name} noise"]
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
        for value in e90 if lora_rank is not None else e90[1:]:
            base = float(lora_rank) if lora_rank is not None else e90[0]
            row.append(value / base if value is not None and base else None)
        rows.append(tuple(row))
    return CompareTable(columns=tuple(columns), rows=tuple(rows), ratio_from=ratio_from)
