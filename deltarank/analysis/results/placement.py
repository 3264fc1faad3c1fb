"""Result records of `placement` (`schema: deltarank.placement/1`): where each ΔW lands relative to W₀'s
singular directions (`deltarank.analysis.maths.placement` defines every measure), per matrix and per module type.

Per matrix and per subspace size k: the shares of ‖ΔW‖_F² in W₀'s top-k and bottom-k left and right singular
directions beside their chance level k/d, the cosines of the principal angles between W₀'s and W''s top-k
subspaces and their mean cos²; and the relative change of W₀'s top singular values. k is matched to ΔW's own
r₀.₉ (key `energy_90`) and taken from the sizes asked for (keys `k<size>`, clipped to min(m, n)). Per module
type, the median and quartiles of each over its layers (`modules`). The command writes it as `placement.json`
in its output directory, beside the figure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from deltarank.analysis.results.base import Record, ResultFile
from deltarank.analysis.results.rank_statistics import spread
from deltarank.io.pairing import SkippedTensor

SCHEMA = "deltarank.placement/1"
RESULT_FILE = "placement.json"
MATCHED_KEY = "energy_90"  # k = ΔW's r₀.₉ (the spectrum's rank key)
SIDES = ("left", "right")
# Per side, the measures of one subspace size (field `<side>_<measure>`), in the order tables show them.
SHARES = ("top", "bottom", "chance")
MEASURES = (*SHARES, "mean_cos2")


def size_key(k: int) -> str:
    """Key of an asked subspace size: 8 -> `k8`."""
    return f"k{k}"


@dataclass(frozen=True)
class SubspacePlacement(Record):
    """ΔW against W₀'s k leading and k trailing singular directions, and W₀'s top-k subspaces against W''s."""

    key: str = field(metadata={"help": "energy_90 (k = ΔW's r₀.₉) or k<size> (an asked size)."})
    k: int = field(
        metadata={"help": "Subspace size used: the r₀.₉ of ΔW, or the asked size clipped to min(m, n)."}
    )
    left_top: float | None = field(
        metadata={"help": "‖U_kᵀ ΔW‖_F² / ‖ΔW‖_F², U_k W₀'s top-k left singular vectors; null when ΔW = 0."}
    )
    left_bottom: float | None = field(
        metadata={"help": "The same for W₀'s bottom-k left singular vectors (smallest σ); null when ΔW = 0."}
    )
    left_chance: float = field(metadata={"help": "k/m: the left share a rotation-invariant random ΔW gets."})
    right_top: float | None = field(
        metadata={"help": "‖ΔW V_k‖_F² / ‖ΔW‖_F², V_k W₀'s top-k right singular vectors; null when ΔW = 0."}
    )
    right_bottom: float | None = field(
        metadata={"help": "The same for W₀'s bottom-k right singular vectors; null when ΔW = 0."}
    )
    right_chance: float = field(
        metadata={"help": "k/n: the right share a rotation-invariant random ΔW gets."}
    )
    left_cosines: tuple[float, ...] = field(
        metadata={
            "help": "Cosines of the principal angles between W₀'s and W''s top-k left subspaces, descending."
        }
    )
    right_cosines: tuple[float, ...] = field(metadata={"help": "The same for the top-k right subspaces."})
    left_mean_cos2: float = field(
        metadata={
            "help": "Mean cos² of the left principal angles: 1 for the same subspace, k/m for random ones."
        }
    )
    right_mean_cos2: float = field(
        metadata={"help": "Mean cos² of the right principal angles (k/n for random subspaces)."}
    )

    def value(self, side: str, measure: str) -> float | None:
        """One measure of one side (`left`/`right`; `top`, `bottom`, `chance`, `mean_cos2`)."""
        found: float | None = getattr(self, f"{side}_{measure}")
        return found

    def chance(self, side: str) -> float:
        """k/d of one side (`left`: k/m, `right`: k/n)."""
        return self.left_chance if side == "left" else self.right_chance


@dataclass(frozen=True)
class MatrixPlacement(Record):
    """Where one ΔW lands relative to its base weight's singular directions."""

    name: str = field(metadata={"help": "Canonical (Hugging Face) name of the base weight."})
    layer: int | None = field(metadata={"help": "Transformer block index, None outside the blocks."})
    module: str = field(metadata={"help": "Module type, e.g. q_proj."})
    shape: tuple[int, int] = field(
        metadata={"help": "Shape of the base weight (m, n) in stored orientation."}
    )
    kind: str = field(metadata={"help": "dense (two checkpoints) or the adapter method (merged as W₀ + ΔW)."})
    base_dtype: str = field(metadata={"help": "Stored dtype of the base weight."})
    tuned_dtype: str = field(metadata={"help": "Stored dtype of the tuned weight or adapter tensors."})
    delta_norm: float = field(metadata={"help": "‖ΔW‖_F."})
    base_norm: float = field(metadata={"help": "‖W₀‖_F."})
    energy_90: int = field(
        metadata={"help": "r₀.₉ of ΔW: its smallest k keeping 90% of ‖ΔW‖_F² (0 when ΔW = 0)."}
    )
    subspaces: tuple[SubspacePlacement, ...] = field(
        metadata={
            "help": "One entry per subspace size: energy_90 first (absent when ΔW = 0), then the asked sizes."
        }
    )
    base_sigma: tuple[float, ...] = field(metadata={"help": "W₀'s top singular values σ_1 … σ_t."})
    tuned_sigma: tuple[float, ...] = field(metadata={"help": "W''s top singular values σ_1 … σ_t."})
    sigma_change: tuple[float | None, ...] = field(
        metadata={"help": "(σ_i(W') − σ_i(W₀)) / σ_i(W₀) for i = 1 … t; null where σ_i(W₀) = 0."}
    )

    def at(self, key: str) -> SubspacePlacement | None:
        """The entry of one subspace size key (`energy_90`, `k8`), None when the record has none."""
        return next((s for s in self.subspaces if s.key == key), None)


@dataclass(frozen=True)
class ModulePlacement(Record):
    """Medians and quartiles over the layers of one module type."""

    module: str = field(metadata={"help": "Module type, e.g. q_proj."})
    matrices: int = field(metadata={"help": "Matrices of this type."})
    subspaces: dict[str, dict[str, dict[str, float]]] = field(
        metadata={
            "help": "Subspace size key -> measure (k, left_top, left_bottom, left_chance, left_mean_cos2 and the "
            "right_ ones) -> {median, q1, q3, layers}; a measure no matrix holds is left out."
        }
    )
    sigma_change: tuple[dict[str, float] | None, ...] = field(
        metadata={
            "help": "Per i = 1 … t, {median, q1, q3, layers} of the relative change of σ_i; null if none."
        }
    )


@dataclass(frozen=True)
class PlacementResult(ResultFile[MatrixPlacement]):
    """Placement of every analysed ΔW of one tuned model relative to its base weights."""

    base: str = field(metadata={"help": "Base checkpoint path as given."})
    tuned: str = field(metadata={"help": "Tuned checkpoint or adapter path as given."})
    sizes: tuple[int, ...] = field(metadata={"help": "Subspace sizes asked for, besides ΔW's r₀.₉."})
    sigma_top: int = field(metadata={"help": "t: how many of W₀'s top singular values are compared."})
    device: str = field(metadata={"help": "Device the decompositions ran on."})
    precision: str = field(
        metadata={"help": "Compute dtype: float32 or float64 (both weights upcast to it)."}
    )
    matrices: tuple[MatrixPlacement, ...] = field(metadata={"help": "One record per matrix."})
    modules: tuple[ModulePlacement, ...] = field(metadata={"help": "Per module type: medians and quartiles."})
    skipped: tuple[SkippedTensor, ...] = field(default=(), metadata={"help": "Selected but not analysed."})
    deltarank_version: str = field(default="", metadata={"help": "Version that wrote the file."})
    schema: str = SCHEMA
    SCHEMA: ClassVar[str] = SCHEMA

    def size_keys(self) -> list[str]:
        """The subspace size keys the records hold, energy_90 first."""
        found = dict.fromkeys(s.key for m in self.matrices for s in m.subspaces)
        return sorted(found, key=lambda key: (key != MATCHED_KEY, int(key[1:]) if key != MATCHED_KEY else 0))

    def module(self, name: str) -> ModulePlacement | None:
        """The summary of one module type, None when no matrix has it."""
        return next((m for m in self.modules if m.module == name), None)


def module_placements(matrices: Sequence[MatrixPlacement], sigma_top: int) -> tuple[ModulePlacement, ...]:
    """Per module type, in first-seen order: the spread over its layers of every measure at every size key, and
    of the relative change of each of the top `sigma_top` σ."""
    groups: dict[str, list[MatrixPlacement]] = {}
    for m in matrices:
        groups.setdefault(m.module, []).append(m)
    summaries = []
    for module, items in groups.items():
        keys = dict.fromkeys(s.key for m in items for s in m.subspaces)
        table: dict[str, dict[str, dict[str, float]]] = {}
        for key in keys:
            entries = [s for m in items if (s := m.at(key)) is not None]
            row = {"k": spread(s.k for s in entries)}
            row |= {
                f"{side}_{measure}": spread(s.value(side, measure) for s in entries)
                for side in SIDES
                for measure in MEASURES
            }
            table[key] = {name: stats for name, stats in row.items() if stats is not None}
        count = min(sigma_top, max(len(m.sigma_change) for m in items))
        changes = tuple(
            spread(m.sigma_change[i] if i < len(m.sigma_change) else None for m in items)
            for i in range(count)
        )
        summaries.append(ModulePlacement(module, len(items), table, changes))
    return tuple(summaries)
