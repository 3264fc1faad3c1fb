"""Merge geometry of n deltas in a similarity result: per matrix and per module type (medians over layers).

Measures (`deltarank.analysis.maths.merging` defines them): the n × n subspace overlap φ(k, k) of the deltas'
top-k singular vectors, TIES's sign-conflict rates among the entries its trim keeps (pairwise n × n and
n-way), and the relative Frobenius error of DARE's drop-and-rescale per delta and for the merged sum. Indices
follow `MergeGeometry.tuned`; DARE rows follow `MergeGeometry.dare_drops`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from deltarank.analysis.results.base import Record
from deltarank.analysis.results.medians import median

Table = tuple[tuple[float | None, ...], ...]


@dataclass(frozen=True)
class MatrixMerge(Record):
    """The merge geometry of the n deltas of one matrix."""

    kinds: tuple[str, ...] = field(metadata={"help": "dense, lora, ...: how each ΔW was obtained."})
    available: tuple[int, ...] = field(
        metadata={"help": "Singular vectors of each ΔW above the numerical cut-off."}
    )
    k: int = field(
        metadata={
            "help": "Subspace size of the overlap: --merge-k clipped to min(m, n) and to every available."
        }
    )
    overlap: Table = field(
        metadata={"help": "n × n φ(k, k) = ‖U_aᵀ U_b‖_F² / k of the top-k singular vectors; diagonal 1."}
    )
    kept: tuple[int, ...] = field(metadata={"help": "Entries of each ΔW that TIES's trim keeps."})
    sign_conflict: Table = field(
        metadata={
            "help": "n × n: among the entries both trimmed deltas keep, the share of opposite signs; null "
            "when they keep none in common."
        }
    )
    sign_conflict_nway: float | None = field(
        metadata={
            "help": "Among the entries kept by at least two trimmed deltas, the share whose kept values do "
            "not all share one sign; null when none is kept twice."
        }
    )
    dare_error: Table = field(metadata={"help": "Per drop rate, per delta: ‖DARE(ΔW) − ΔW‖_F / ‖ΔW‖_F."})
    dare_merged_error: tuple[float | None, ...] = field(
        metadata={"help": "Per drop rate: ‖Σ DARE(ΔW_a) − Σ ΔW_a‖_F / ‖Σ ΔW_a‖_F (null when the sum is 0)."}
    )


@dataclass(frozen=True)
class ModuleMerge(Record):
    """Medians over the matrices of one module type of every merge measure, entry by entry."""

    module: str = field(metadata={"help": "Module type, e.g. q_proj."})
    matrices: int = field(metadata={"help": "Matrices of this type."})
    k: float = field(metadata={"help": "Median subspace size of the overlap."})
    overlap: Table = field(metadata={"help": "Median n × n overlap φ(k, k)."})
    sign_conflict: Table = field(metadata={"help": "Median n × n pairwise sign-conflict rate."})
    sign_conflict_nway: float | None = field(metadata={"help": "Median n-way sign-conflict rate."})
    dare_error: Table = field(metadata={"help": "Per drop rate, per delta: median DARE relative error."})
    dare_merged_error: tuple[float | None, ...] = field(
        metadata={"help": "Per drop rate: median DARE relative error of the merged sum."}
    )


@dataclass(frozen=True)
class MergeGeometry(Record):
    """The settings of the merge measures and their per-module medians (the per-matrix values live in each
    matrix record's `merge`)."""

    tuned: tuple[str, ...] = field(metadata={"help": "The n tuned checkpoints or adapters, in index order."})
    k: int = field(metadata={"help": "Requested overlap subspace size (--merge-k), before clipping."})
    density: float = field(metadata={"help": "Share of entries TIES's trim keeps (--density)."})
    dare_drops: tuple[float, ...] = field(metadata={"help": "DARE drop rates p (--dare-drops)."})
    seed: int = field(metadata={"help": "Seed of the DARE masks (--seed)."})
    modules: tuple[ModuleMerge, ...] = field(metadata={"help": "Per module type: medians over its matrices."})


def module_merges(records: Sequence[tuple[str, MatrixMerge]]) -> tuple[ModuleMerge, ...]:
    """Per module type, in first-seen order, the entry-wise medians of (module type, record) pairs."""
    groups: dict[str, list[MatrixMerge]] = {}
    for module, record in records:
        groups.setdefault(module, []).append(record)
    return tuple(_module_merge(module, items) for module, items in groups.items())


def _module_merge(module: str, items: list[MatrixMerge]) -> ModuleMerge:
    k = median(m.k for m in items)
    return ModuleMerge(
        module=module,
        matrices=len(items),
        k=0.0 if k is None else k,
        overlap=_table_median(items, lambda m: m.overlap),
        sign_conflict=_table_median(items, lambda m: m.sign_conflict),
        sign_conflict_nway=median(m.sign_conflict_nway for m in items),
        dare_error=_table_median(items, lambda m: m.dare_error),
        dare_merged_error=tuple(
            median(m.dare_merged_error[i] for m in items) for i in range(len(items[0].dare_merged_error))
        ),
    )


def _table_median(items: list[MatrixMerge], table: Callable[[MatrixMerge], Table]) -> Table:
    """Entry-wise median of one table of every record (same shape in all)."""
    first = table(items[0])
    return tuple(
        tuple(median(table(m)[row][col] for m in items) for col in range(len(first[row])))
        for row in range(len(first))
    )
