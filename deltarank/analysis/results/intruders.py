"""Result records of `intruders` (`schema: deltarank.intruders/1`): per matrix, the max |cos| of the top
singular vectors of W' against W's, and the intruder counts they give."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from deltarank.analysis.results.base import Record, ResultFile
from deltarank.io.pairing import SkippedTensor

SCHEMA = "deltarank.intruders/1"


def count_intruders(max_cos: Sequence[float] | np.ndarray, epsilon: float) -> int:
    """#{j : max_i |cos(u'_j, u_i)| < ε}."""
    return int(np.count_nonzero(np.asarray(max_cos, dtype=np.float64) < epsilon))


def sweep_key(epsilon: float) -> str:
    return f"{epsilon:g}"


@dataclass(frozen=True)
class MatrixIntruders(Record):
    """Intruder dimensions of one tuned weight matrix."""

    name: str = field(metadata={"help": "Canonical (Hugging Face) name of the base weight."})
    layer: int | None = field(metadata={"help": "Transformer block index, None outside the blocks."})
    module: str = field(metadata={"help": "Module type, e.g. q_proj."})
    shape: tuple[int, int] = field(metadata={"help": "Shape of the base weight (stored orientation)."})
    kind: str = field(metadata={"help": "dense (two checkpoints), lora or dora (merged in float32)."})
    max_cos: tuple[float, ...] = field(
        metadata={"help": "max_i |cos(u'_j, u_i)| for the top-k tuned vectors."}
    )
    tuned_sigma: tuple[float, ...] = field(metadata={"help": "Top-k singular values of W'."})
    count: int = field(metadata={"help": "Intruders at the run's ε."})
    sweep: dict[str, int] = field(metadata={"help": "Intruder count per ε of the sweep (keys '0.1' …)."})


@dataclass(frozen=True)
class IntruderResult(ResultFile[MatrixIntruders]):
    """Intruder dimensions of every analysed matrix of one tuned model."""

    base: str = field(metadata={"help": "Base checkpoint path as given."})
    tuned: str = field(metadata={"help": "Tuned checkpoint or adapter path as given."})
    top_k: int = field(metadata={"help": "How many top singular vectors of W' are tested."})
    epsilon: float = field(metadata={"help": "Cosine threshold ε of `count`."})
    epsilons: tuple[float, ...] = field(metadata={"help": "The ε of the stored sweep."})
    device: str = field(metadata={"help": "Device the decompositions ran on."})
    precision: str = field(metadata={"help": "Compute dtype: float32 or float64."})
    matrices: tuple[MatrixIntruders, ...] = field(metadata={"help": "One record per matrix."})
    skipped: tuple[SkippedTensor, ...] = field(default=(), metadata={"help": "Selected but not analysed."})
    deltarank_version: str = field(default="", metadata={"help": "Version that wrote the file."})
    schema: str = SCHEMA
    SCHEMA: ClassVar[str] = SCHEMA

    def total(self, epsilon: float | None = None) -> int:
        """Intruders summed over matrices, at the run's ε or at an ε of the sweep."""
        if epsilon is None:
            return sum(m.count for m in self.matrices)
        return sum(count_intruders(m.max_cos, epsilon) for m in self.matrices)

    def by_layer(self, module: str, epsilon: float | None = None) -> dict[int, int]:
        """Intruder count per layer index of one module type (matrices outside the blocks left out)."""
        eps = self.epsilon if epsilon is None else epsilon
        return {
            m.layer: count_intruders(m.max_cos, eps)
            for m in self.matrices
            if m.module == module and m.layer is not None
        }
