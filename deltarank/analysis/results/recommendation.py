"""Result records of `recommend` (`schema: deltarank.recommendation/1`): per-module LoRA ranks chosen from the
singular values of ΔW, what each keeps of ‖ΔW‖_F², and the peft LoraConfig they make.

Per matrix: its shape, the rank chosen (0: left out of the adapter), the share of ‖ΔW‖_F² the best rank-r
approximation keeps (Σ_{i≤r} σ_i² / Σ σ_i²), the relative Frobenius residual ‖ΔW − ΔW_r‖_F / ‖ΔW‖_F =
√(1 − kept share), and the kept share against rank (the curve, up to min(width, max(CURVE_RANKS, 2r)) ranks).
Totals: trainable LoRA parameters Σ r·(out + in) and the share of Σ‖ΔW‖_F² kept over all matrices. The command
writes it as `recommendation.json` beside the peft `adapter_config.json`.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from deltarank.analysis.results.base import Record, ResultFile
from deltarank.io.pairing import SkippedTensor

SCHEMA = "deltarank.recommendation/1"
RESULT_FILE = "recommendation.json"
POLICIES = ("energy", "budget")
CURVE_RANKS = 256  # the curve covers at least this many ranks (or the whole width), and 2r
ALPHA_PER_RANK = 2  # α = 2r per module, deltarank's LoRA default (TrainConfig.alpha)


def curve_length(width: int, rank: int) -> int:
    """How many ranks a matrix's curve holds: min(width, max(CURVE_RANKS, 2r))."""
    return min(int(width), max(CURVE_RANKS, 2 * int(rank)))


def residual(kept_share: float) -> float:
    """‖ΔW − ΔW_r‖_F / ‖ΔW‖_F = √(1 − kept share) (Eckart–Young); 0 for ΔW = 0."""
    return math.sqrt(max(0.0, 1.0 - kept_share))


@dataclass(frozen=True)
class MatrixRecommendation(Record):
    """The rank recommended for one weight matrix and what it keeps of its ΔW."""

    name: str = field(
        metadata={"help": "Module name as peft names it, e.g. model.layers.3.self_attn.q_proj."}
    )
    layer: int | None = field(metadata={"help": "Transformer block index, None outside the blocks."})
    module: str = field(metadata={"help": "Module type, e.g. q_proj."})
    shape: tuple[int, int] = field(metadata={"help": "Shape of the weight (out, in)."})
    kind: str = field(metadata={"help": "dense (two checkpoints) or the adapter method TUNED holds."})
    rank: int = field(
        metadata={"help": "Recommended LoRA rank r (0: the module is left out of the adapter)."}
    )
    cap: int = field(
        metadata={"help": "Largest rank allowed: min(out, in), or fewer σ above the noise floor."}
    )
    noise_floor: float | None = field(
        metadata={
            "help": "σ at or below which a direction counts as noise (the spectrum's storage-noise edge, or the "
            "--null file's σ₁ of this matrix, whichever is larger); null when none is known."
        }
    )
    parameters: int = field(metadata={"help": "Trainable LoRA parameters r·(out + in)."})
    delta_norm: float = field(metadata={"help": "‖ΔW‖_F."})
    retained_energy: float = field(
        metadata={"help": "Σ_{i≤r} σ_i² / Σ σ_i²: the share of ‖ΔW‖_F² the best rank-r approximation keeps."}
    )
    residual: float = field(metadata={"help": "‖ΔW − ΔW_r‖_F / ‖ΔW‖_F = √(1 − retained_energy)."})
    curve: tuple[float, ...] = field(
        metadata={
            "help": "Retained share at rank k = 1 … min(width, max(256, 2r)) (cumulative energy fractions)."
        }
    )


@dataclass(frozen=True)
class RecommendationResult(ResultFile[MatrixRecommendation]):
    """Per-module LoRA ranks for one tuned model, from the singular values of its ΔW."""

    base: str = field(metadata={"help": "Base checkpoint path as given."})
    tuned: str = field(metadata={"help": "Tuned checkpoint, adapter or run path as given."})
    policy: str = field(metadata={"help": "energy (each matrix's r_τ) or budget (N parameters, greedy)."})
    energy: float | None = field(metadata={"help": "τ of the energy policy; null for budget."})
    budget: int | None = field(metadata={"help": "N of the budget policy; null for energy."})
    null: str | None = field(
        metadata={
            "help": "The --null spectrum file whose σ₁ per matrix raised the noise floor; null if none."
        }
    )
    lora_r: int = field(metadata={"help": "The adapter's default r: the most common non-zero rank."})
    lora_alpha: int = field(metadata={"help": "The adapter's default α = 2r (α = 2r per module too)."})
    trainable_parameters: int = field(metadata={"help": "Σ r·(out + in) over the matrices."})
    retained_energy: float = field(
        metadata={"help": "Σ_m Σ_{i≤r_m} σ_{m,i}² / Σ_m ‖ΔW_m‖_F²: the share kept over all matrices."}
    )
    energy_bound: float | None = field(
        metadata={
            "help": "budget: no allocation within the budget keeps a larger share than this (equal to "
            "retained_energy when the greedy is provably optimal); null for energy."
        }
    )
    optimal: bool | None = field(
        metadata={
            "help": "budget: true when the greedy spent it along its order of σ² per parameter, which no "
            "allocation within the budget beats; null for energy."
        }
    )
    device: str = field(metadata={"help": "Device the decompositions ran on."})
    precision: str = field(metadata={"help": "Compute dtype: float32 or float64."})
    matrices: tuple[MatrixRecommendation, ...] = field(metadata={"help": "One record per matrix."})
    skipped: tuple[SkippedTensor, ...] = field(default=(), metadata={"help": "Selected but not analysed."})
    budget_rank: int | None = field(
        default=None,
        metadata={
            "help": "budget given as a rank R: the budget is Σ R·(out + in) over the analysed matrices, the "
            "parameters of a uniform rank-R LoRA on them; null otherwise."
        },
    )
    deltarank_version: str = field(default="", metadata={"help": "Version that wrote the file."})
    schema: str = SCHEMA
    SCHEMA: ClassVar[str] = SCHEMA

    @property
    def budget_left(self) -> int | None:
        """Parameters of the budget left unspent (no open matrix's next rank fits in them); None for energy."""
        return None if self.budget is None else self.budget - self.trainable_parameters

    def ranks(self) -> dict[str, int]:
        """Module name -> recommended rank, for every matrix with a rank above 0."""
        return {m.name: m.rank for m in self.matrices if m.rank > 0}

    def lora_config_kwargs(self) -> dict[str, Any]:
        """`peft.LoraConfig` arguments of the recommendation: r the most common rank, rank_pattern the others
        keyed by full module name (peft matches a key k as `(.*\\.)?(k)$`, so `model.layers.1.self_attn.q_proj`
        never selects layer 11's), α = 2r per module, and only modules with r > 0 in target_modules."""
        ranks = self.ranks()
        pattern = {name: r for name, r in ranks.items() if r != self.lora_r}
        return {
            "r": self.lora_r,
            "lora_alpha": self.lora_alpha,
            "target_modules": list(ranks),
            "rank_pattern": pattern,
            "alpha_pattern": {name: ALPHA_PER_RANK * r for name, r in pattern.items()},
            "base_model_name_or_path": self.base,
            "task_type": "CAUSAL_LM",
        }


def summarise(items: Sequence[MatrixRecommendation]) -> tuple[str, int, float | None]:
    """Of some matrices: the rank range (`4` or `2-8`), the LoRA parameters they cost, and the share of their
    Σ‖ΔW‖_F² the ranks keep (None when every ΔW is 0)."""
    ranks = [m.rank for m in items]
    span = f"{min(ranks)}" if min(ranks) == max(ranks) else f"{min(ranks)}-{max(ranks)}"
    total = sum(m.delta_norm**2 for m in items)
    kept = sum(m.retained_energy * m.delta_norm**2 for m in items)
    return span, sum(m.parameters for m in items), kept / total if total else None


def default_rank(ranks: list[int]) -> int:
    """The most common of the non-zero ranks (the smallest of the most common ones); 1 when there is none."""
    counts = Counter(r for r in ranks if r > 0)
    if not counts:
        return 1
    top = max(counts.values())
    return min(r for r, n in counts.items() if n == top)
