"""Result records of `similarity`: frozen dataclasses and versioned JSON (`schema: deltarank.similarity/2`).

φ(i, j) compares the first two deltas, A and B. The merge geometry of all n deltas (`results.merge`), measured
with three or more of them (or when asked for with two), is the optional `merge` of the file and of each
matrix record; a result without it writes neither key, so a two-delta file reads as before.

Version 2 names the requested subspace sizes `sizes`, as the option `--sizes` does; version 1 files (`top`) still
read, their `top` as `sizes`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from deltarank.analysis.results.base import Record, ResultFile
from deltarank.analysis.results.merge import MatrixMerge, MergeGeometry
from deltarank.io.pairing import SkippedTensor

SCHEMA = "deltarank.similarity/2"
SCHEMA_1 = "deltarank.similarity/1"  # `sizes` was `top`


@dataclass(frozen=True)
class MatrixSimilarity(Record):
    """φ(i, j) = ‖U_Aᵢᵀ U_Bⱼ‖_F² / min(i, j) between the top singular subspaces of ΔW_A and ΔW_B of one matrix."""

    name: str = field(metadata={"help": "Canonical (Hugging Face) name of the base weight."})
    layer: int | None = field(metadata={"help": "Transformer block index, None outside the blocks."})
    module: str = field(metadata={"help": "Module type, e.g. q_proj."})
    shape: tuple[int, int] = field(metadata={"help": "Shape of the base weight (stored orientation)."})
    kind_a: str = field(metadata={"help": "dense, lora or dora: how ΔW_A was obtained."})
    kind_b: str = field(metadata={"help": "dense, lora or dora: how ΔW_B was obtained."})
    available_a: int = field(metadata={"help": "Singular vectors of ΔW_A above the numerical cut-off."})
    available_b: int = field(metadata={"help": "Singular vectors of ΔW_B above the numerical cut-off."})
    tops_a: tuple[int, ...] = field(
        metadata={"help": "Subspace sizes i (grid rows), clipped to available_a."}
    )
    tops_b: tuple[int, ...] = field(
        metadata={"help": "Subspace sizes j (grid columns), clipped to available_b."}
    )
    grid: tuple[tuple[float, ...], ...] = field(metadata={"help": "φ(i, j), rows i in tops_a, columns j."})
    diagonal: tuple[float, ...] = field(
        metadata={"help": "φ(i, i) for i = 1 … min(max(tops_a), max(tops_b)), index i − 1."}
    )
    merge: MatrixMerge | None = field(
        default=None,
        metadata={"help": "Merge geometry of the n deltas of this matrix; absent when not measured."},
    )

    def to_dict(self) -> dict[str, Any]:
        """`Record.to_dict` without `merge` when it was not measured."""
        return _without_none(super().to_dict(), "merge")

    def phi(self, i: int, j: int) -> float | None:
        """φ(i, j) from the stored grid, None when i or j is not a stored size."""
        if i not in self.tops_a or j not in self.tops_b:
            return None
        return self.grid[self.tops_a.index(i)][self.tops_b.index(j)]


@dataclass(frozen=True)
class SimilarityResult(ResultFile[MatrixSimilarity]):
    """Subspace similarity of two tuned models' deltas, matrix by matrix."""

    base: str = field(metadata={"help": "Base checkpoint path as given."})
    tuned_a: str = field(metadata={"help": "First tuned checkpoint or adapter (A, grid rows)."})
    tuned_b: str = field(metadata={"help": "Second tuned checkpoint or adapter (B, grid columns)."})
    side: str = field(metadata={"help": "left (output space) or right (input space) singular vectors."})
    sizes: tuple[int, ...] = field(
        metadata={
            "help": f"Requested subspace sizes (--sizes), before clipping; `top` in `{SCHEMA_1}` files."
        }
    )
    device: str = field(metadata={"help": "Device the decompositions ran on."})
    precision: str = field(metadata={"help": "Compute dtype: float32 or float64."})
    matrices: tuple[MatrixSimilarity, ...] = field(metadata={"help": "One record per matrix."})
    skipped: tuple[SkippedTensor, ...] = field(default=(), metadata={"help": "Selected but not compared."})
    deltarank_version: str = field(default="", metadata={"help": "Version that wrote the file."})
    merge: MergeGeometry | None = field(
        default=None,
        metadata={
            "help": "Settings and per-module medians of the merge geometry of all n deltas; absent "
            "when not measured."
        },
    )
    schema: str = SCHEMA
    SCHEMA: ClassVar[str] = SCHEMA
    RENAMED: ClassVar[dict[str, dict[str, str]]] = {SCHEMA_1: {"top": "sizes"}}

    def to_dict(self) -> dict[str, Any]:
        """`ResultFile.to_dict` without `merge` when it was not measured."""
        return _without_none(super().to_dict(), "merge")

    @property
    def tuned(self) -> tuple[str, ...]:
        """Every compared tuned checkpoint or adapter: the merge geometry's n, else A and B."""
        return self.merge.tuned if self.merge is not None else (self.tuned_a, self.tuned_b)

    def module_means(self, i: int, j: int | None = None) -> dict[str, float]:
        """Mean φ(i, j) (j = i by default) over the layers of each module type that store it."""
        col = i if j is None else j
        means = {}
        for module, items in self.by_module().items():
            values = [v for m in items if (v := m.phi(i, col)) is not None]
            if values:
                means[module] = float(np.mean(values))
        return means

    def dimension(self, matrix: MatrixSimilarity) -> int:
        """The dimension of the space the compared singular vectors live in: out (left) or in (right)."""
        return matrix.shape[0] if self.side == "left" else matrix.shape[1]

    def module_chance(self, i: int, j: int | None = None) -> dict[str, float]:
        """Mean chance φ(i, j) per module type (`chance_phi`: what two random subspaces of these sizes give)."""
        col = i if j is None else j
        return {
            module: float(np.mean([chance_phi(i, col, self.dimension(m)) for m in items]))
            for module, items in self.by_module().items()
        }

    def module_grid(self, module: str) -> tuple[tuple[int, ...], tuple[int, ...], np.ndarray]:
        """Mean φ grid over the layers of one module type, on the sizes every one of them stores.

        Returns:
            (sizes i, sizes j, grid of shape (len(i), len(j))).
        """
        items = self.by_module()[module]
        rows = tuple(sorted(set.intersection(*(set(m.tops_a) for m in items))))
        cols = tuple(sorted(set.intersection(*(set(m.tops_b) for m in items))))
        grid = np.array([[np.mean([m.phi(i, j) for m in items]) for j in cols] for i in rows])
        return rows, cols, grid.reshape(len(rows), len(cols))


def chance_phi(i: int, j: int, dimension: int) -> float:
    """φ(i, j) of two independent uniformly random subspaces of R^dimension, in expectation: E‖U_iᵀ V_j‖_F² = i·j/d,
    so φ = max(i, j)/d (at most 1): the chance line every φ is read against (φ(16, 16) on 576 dimensions: 0.028)."""
    return min(1.0, max(i, j) / dimension) if dimension > 0 else 1.0


def _without_none(data: dict[str, Any], key: str) -> dict[str, Any]:
    """`data` without `key` when its value is None (an optional section that was not measured)."""
    if data.get(key, "") is None:
        del data[key]
    return data
