"""The sparsity profile of one ΔW in a spectrum record: sparse or low-rank, measured side by side.

Reinforcement-learning updates leave most entries unchanged yet are nearly full rank, while LoRA changes every
entry through a rank-r product (Mukherjee et al. 2025, arXiv 2505.11711); full fine-tuning is dense and of high
rank. Each record keeps the shares of entries that did not move (exactly, within the run's absolute tolerance,
within the storage rounding of the base weight) and the numerical rank ÷ min(m, n); `MEASURES` names them for
the per-module statistics (`rank_statistics`), the `compare` table and the sparse-vs-low-rank figure.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from deltarank.analysis.results.base import Record

# The profile's fields, in the order tables show them.
MEASURES = ("unchanged", "within_atol", "within_rounding", "rank_fraction")


@dataclass(frozen=True)
class SparsityProfile(Record):
    """How sparse and how low-rank one ΔW is (shares of its m·n entries, and a share of its width)."""

    unchanged: float = field(
        metadata={
            "help": "Share of entries with Δw == 0 exactly, both weights upcast to the compute dtype (for a dense "
            "ΔW the same count as erased_fraction; for an adapter, of its formed ΔW, where exact zeros are rare)."
        }
    )
    within_atol: float = field(
        metadata={"help": "Share of entries with |Δw| ≤ the result's sparsity_atol (default 1e-5)."}
    )
    within_rounding: float | None = field(
        metadata={
            "help": "Share of entries with |Δw| ≤ ulp(w)/2, w the base entry and ulp its grid spacing in the base's "
            "stored dtype (what storing W + ΔW in that dtype rounds away); null when the base weight was not "
            "read (LoRA-style factors) or is stored quantized."
        }
    )
    rank_fraction: float | None = field(
        metadata={
            "help": "Numerical rank (ranks.numerical: σ above σ₁·min(m, n)·eps) ÷ min(m, n); null when an "
            "approximate spectrum cannot tell."
        }
    )

    @property
    def changed(self) -> float:
        """Share of entries changed by more than the tolerance: 1 − `within_atol`."""
        return 1.0 - self.within_atol
