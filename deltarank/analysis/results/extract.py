"""Result records of `extract`: frozen dataclasses and versioned JSON (`schema: deltarank.extract/1`).

The file is saved inside the adapter directory as `deltarank_extract.json`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, TypeVar

import numpy as np

from deltarank.analysis.results.base import Record, ResultFile
from deltarank.io.pairing import SkippedTensor

SCHEMA = "deltarank.extract/1"
RESULT_FILE = "deltarank_extract.json"
E = TypeVar("E", bound="ExtractResult")


@dataclass(frozen=True)
class MatrixExtract(Record):
    """The rank-k truncation of one ΔW written to the adapter."""

    name: str = field(metadata={"help": "Canonical (Hugging Face) name of the base weight."})
    layer: int | None = field(metadata={"help": "Transformer block index, None outside the blocks."})
    module: str = field(metadata={"help": "Module type, e.g. q_proj."})
    shape: tuple[int, int] = field(metadata={"help": "Shape of the base weight (out, in)."})
    kind: str = field(metadata={"help": "dense, lora or dora: how ΔW was obtained."})
    rank: int = field(metadata={"help": "Rank k written for this matrix."})
    retained_energy: float = field(metadata={"help": "Σ_{i≤k} σ_i² / Σ_i σ_i² of ΔW."})
    singular_values: tuple[float, ...] = field(metadata={"help": "σ of ΔW, descending (r of them for LoRA)."})

    def energy_curve(self) -> np.ndarray:
        """Retained energy for k = 1 … len(σ): cumsum(σ²) / Σσ²."""
        energy = np.asarray(self.singular_values, dtype=np.float64) ** 2
        total = energy.sum()
        return np.cumsum(energy) / total if total > 0 else np.zeros_like(energy)


@dataclass(frozen=True)
class ExtractResult(ResultFile[MatrixExtract]):
    """What one extraction wrote: the adapter directory and, per matrix, its rank and retained energy."""

    base: str = field(metadata={"help": "Base checkpoint path as given."})
    tuned: str = field(metadata={"help": "Tuned checkpoint or adapter path as given."})
    out_dir: str = field(metadata={"help": "The adapter directory written."})
    rank: int | None = field(metadata={"help": "Fixed rank asked for (--lora-rank), or None."})
    energy: float | None = field(metadata={"help": "Energy share τ asked for (--energy), or None."})
    r: int = field(metadata={"help": "Default r of adapter_config.json (the most common rank)."})
    dtype: str = field(metadata={"help": "Stored dtype of the factors."})
    precision: str = field(metadata={"help": "Compute dtype of the SVD."})
    device: str = field(metadata={"help": "Device the decompositions ran on."})
    matrices: tuple[MatrixExtract, ...] = field(metadata={"help": "One record per extracted matrix."})
    skipped: tuple[SkippedTensor, ...] = field(default=(), metadata={"help": "Selected but not extracted."})
    deltarank_version: str = field(default="", metadata={"help": "Version that wrote the file."})
    schema: str = SCHEMA
    SCHEMA: ClassVar[str] = SCHEMA

    def ranks(self) -> dict[str, int]:
        """Rank per module name (`model.layers.0.self_attn.q_proj`)."""
        return {m.name.removesuffix(".weight"): m.rank for m in self.matrices}

    def module_energy(self) -> dict[str, float]:
        """Mean retained energy per module type."""
        groups: dict[str, list[float]] = {}
        for m in self.matrices:
            groups.setdefault(m.module, []).append(m.retained_energy)
        return {module: float(np.mean(values)) for module, values in groups.items()}

    @classmethod
    def from_json(cls: type[E], source: str | Path) -> E:
        """Read a `deltarank.extract/1` file: a path, an adapter directory holding one, or JSON text."""
        path = Path(str(source))
        if not str(source).lstrip().startswith("{") and path.is_dir():
            source = path / RESULT_FILE
        return super().from_json(source)
