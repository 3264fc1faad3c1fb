"""Medians over layers, per module type: the summary every table, figure and report of deltarank shows."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable
from typing import TypeVar

from deltarank.analysis.results.base import ModuleRecord

M = TypeVar("M", bound=ModuleRecord)


def median(values: Iterable[float | None]) -> float | None:
    """The median of the values that are not None; None when there are none."""
    present = [float(v) for v in values if v is not None]
    return float(statistics.median(present)) if present else None


def quartiles(values: Iterable[float | None]) -> tuple[float, float, float] | None:
    """(first quartile, median, third quartile) of the values that are not None (inclusive method: the
    quartiles of 1, 2, 3, 4 are 1.75, 2.5, 3.25); None when there are none."""
    present = sorted(float(v) for v in values if v is not None)
    if not present:
        return None
    if len(present) == 1:
        return present[0], present[0], present[0]
    q1, mid, q3 = statistics.quantiles(present, n=4, method="inclusive")
    return q1, mid, q3


def module_medians(matrices: Iterable[M], value: Callable[[M], float | None]) -> dict[str, float]:
    """Median of `value(record)` per module type, in first-seen order; records whose value is None are left
    out, and a module type with no value at all is not listed."""
    groups = _by_module(matrices, value)
    return {module: mid for module, values in groups.items() if (mid := median(values)) is not None}


def module_quartiles(
    matrices: Iterable[M], value: Callable[[M], float | None]
) -> dict[str, tuple[float, float, float]]:
    """`quartiles` of `value(record)` over the layers of each module type (the layer spread beside the
    median), in first-seen order; a module type with no value at all is not listed."""
    groups = _by_module(matrices, value)
    return {module: found for module, values in groups.items() if (found := quartiles(values)) is not None}


def _by_module(matrices: Iterable[M], value: Callable[[M], float | None]) -> dict[str, list[float | None]]:
    """`value(record)` of every record, grouped by module type in first-seen order."""
    groups: dict[str, list[float | None]] = {}
    for m in matrices:
        groups.setdefault(m.module, []).append(value(m))
    return groups


def rank_of(key: str) -> Callable[[ModuleRecord], float | None]:
    """`value` for `module_medians` reading `ranks[key]` of a spectrum record (None when absent or null)."""

    def value(record: ModuleRecord) -> float | None:
        found = getattr(record, "ranks", {}).get(key)
        return None if found is None else float(found)

    return value
