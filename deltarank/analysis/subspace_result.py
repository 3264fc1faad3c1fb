"""Result records of `similarity`: frozen dataclasses and versioned JSON (`schema: deltarank.similarity/1`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from deltarank.analysis.result_json import dump_result, read_result
from deltarank.analysis.results import SkippedTensor

SCHEMA = "deltarank.similarity/1"
_TUPLE_FIELDS = ("shape", "tops_a", "tops_b", "diagonal")


@dataclass(frozen=True)
class MatrixSimilarity:
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

    def phi(self, i: int, j: int) -> float | None:
        """φ(i, j) from the stored grid, None when i or j is not a stored size."""
        if i not in self.tops_a or j not in self.tops_b:
            return None
        return self.grid[self.tops_a.index(i)][self.tops_b.index(j)]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        out = dict(self.__dict__)
        for key in _TUPLE_FIELDS:
            out[key] = list(out[key])
        out["grid"] = [list(row) for row in self.grid]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MatrixSimilarity:
        """Inverse of `to_dict`."""
        values = dict(data)
        for key in _TUPLE_FIELDS:
            values[key] = tuple(values[key])
        values["grid"] = tuple(tuple(row) for row in values["grid"])
        return cls(**values)


@dataclass(frozen=True)
class SimilarityResult:
    """Subspace similarity of two tuned models' deltas, matrix by matrix."""

    base: str = field(metadata={"help": "Base checkpoint path as given."})
    tuned_a: str = field(metadata={"help": "First tuned checkpoint or adapter (A, grid rows)."})
    tuned_b: str = field(metadata={"help": "Second tuned checkpoint or adapter (B, grid columns)."})
    side: str = field(metadata={"help": "left (output space) or right (input space) singular vectors."})
    top: tuple[int, ...] = field(metadata={"help": "Requested subspace sizes, before clipping."})
    device: str = field(metadata={"help": "Device the decompositions ran on."})
    precision: str = field(metadata={"help": "Compute dtype: float32 or float64."})
    matrices: tuple[MatrixSimilarity, ...] = field(metadata={"help": "One record per matrix."})
    skipped: tuple[SkippedTensor, ...] = field(default=(), metadata={"help": "Selected but not compared."})
    deltarank_version: str = field(default="", metadata={"help": "Version that wrote the file."})
    schema: str = SCHEMA

    def by_module(self) -> dict[str, list[MatrixSimilarity]]:
        """Matrices grouped by module type, in first-seen order."""
        groups: dict[str, list[MatrixSimilarity]] = {}
        for m in self.matrices:
            groups.setdefault(m.module, []).append(m)
        return groups

    def module_means(self, i: int, j: int | None = None) -> dict[str, float]:
        """Mean φ(i, j) (j = i by default) over the layers of each module type that store it."""
        col = i if j is None else j
        means = {}
        for module, items in self.by_module().items():
            values = [v for m in items if (v := m.phi(i, col)) is not None]
            if values:
                means[module] = float(np.mean(values))
        return means

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

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict with the schema tag first."""
        head = {"schema": self.schema, "deltarank_version": self.deltarank_version}
        body = {k: v for k, v in self.__dict__.items() if k not in head}
        body |= {"top": list(self.top), "matrices": [m.to_dict() for m in self.matrices]}
        return head | body | {"skipped": [s.__dict__ for s in self.skipped]}

    def to_json(self, path: str | Path | None = None) -> str:
        """Serialise to JSON text; when `path` is given, also write it atomically."""
        return dump_result(self.to_dict(), path)

    @classmethod
    def from_json(cls, source: str | Path) -> SimilarityResult:
        """Read a `deltarank.similarity/1` file (a path, or JSON text)."""
        data = read_result(source, SCHEMA)
        data["top"] = tuple(data["top"])
        data["matrices"] = tuple(MatrixSimilarity.from_dict(m) for m in data["matrices"])
        data["skipped"] = tuple(SkippedTensor(**s) for s in data.get("skipped", []))
        return cls(**data)
