"""Rank measures of a singular-value spectrum σ₁ ≥ σ₂ ≥ … ≥ σ_n ≥ 0 (definitions: shared science notes).

Every function takes the full spectrum as a 1-D float array and returns one number. A zero spectrum (ΔW = 0)
has every rank 0.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

# Relative slack when comparing a cumulative energy with τ·total, so that a planted spectrum whose energy
# reaches τ exactly at k (e.g. σ = 3, 1, 1, 1 with τ = 0.75) is not pushed to k+1 by rounding.
ENERGY_RTOL = 1e-12


def _as_array(sigma: npt.ArrayLike) -> FloatArray:
    return np.asarray(sigma, dtype=np.float64)


def energy_rank(sigma: npt.ArrayLike, tau: float) -> int:
    """Energy rank r_τ: the smallest k with Σ_{i≤k} σ_i² ≥ τ Σ_i σ_i² (Biderman et al. 2024 use τ = 0.9)."""
    energy = _as_array(sigma) ** 2
    k = partial_energy_rank(energy, tau, float(energy.sum()))
    return energy.size if k is None else k


def partial_energy_rank(energy: FloatArray, tau: float, total: float) -> int | None:
    """Smallest k with Σ_{i≤k} σ_i² ≥ τ·total, from the leading σ_i² only; None when they do not reach it.

    `total` is Σ σ_i² over the whole spectrum (‖ΔW‖_F², known exactly even when only the top σ are).
    """
    if total == 0.0:
        return 0
    cumulative = np.cumsum(energy)  # sequential sums may end a few ulps below the pairwise `total`
    k = int(np.searchsorted(cumulative, tau * total * (1.0 - ENERGY_RTOL), side="left") + 1)
    return k if k <= energy.size else None


def entropy_rank(sigma: npt.ArrayLike) -> float:
    """Entropy effective rank (Roy & Vetterli 2007): exp(−Σ p_i log p_i) with p_i = σ_i / Σ_j σ_j."""
    s = _as_array(sigma)
    total = s.sum()
    if total == 0.0:
        return 0.0
    p = s[s > 0] / total
    return float(np.exp(-np.sum(p * np.log(p))))


def stable_rank(sigma: npt.ArrayLike) -> float:
    """Stable rank: Σ σ_i² / σ₁² = ‖ΔW‖_F² / ‖ΔW‖₂²."""
    s = _as_array(sigma)
    if s.size == 0 or s.max() == 0.0:
        return 0.0
    return float(np.sum(s**2) / s.max() ** 2)


def participation_ratio(sigma: npt.ArrayLike) -> float:
    """Participation ratio: (Σ σ_i²)² / Σ σ_i⁴."""
    energy = _as_array(sigma) ** 2
    fourth = np.sum(energy**2)
    if fourth == 0.0:
        return 0.0
    return float(energy.sum() ** 2 / fourth)


def numerical_threshold(sigma: npt.ArrayLike, n: int, eps: float) -> float:
    """σ₁ · n · eps: the numerical-rank cut-off of a spectrum computed in a dtype with machine epsilon eps."""
    s = _as_array(sigma)
    return float(s.max()) * n * eps if s.size else 0.0


def count_above(sigma: npt.ArrayLike, edge: float) -> int:
    """#{σ_i > edge}: numerical rank with edge = σ₁·n·eps, noise-floor rank with the noise edge."""
    return int(np.count_nonzero(_as_array(sigma) > edge))


def all_ranks(
    sigma: npt.ArrayLike, thresholds: tuple[float, ...], numerical_edge: float, noise_edge: float
) -> dict[str, float | None]:
    """Every rank measure of one full spectrum, keyed as in the result file (`energy_90`, `entropy`, ...)."""
    ranks: dict[str, float | None] = {threshold_key(t): energy_rank(sigma, t) for t in thresholds}
    ranks["entropy"] = entropy_rank(sigma)
    ranks["stable"] = stable_rank(sigma)
    ranks["participation"] = participation_ratio(sigma)
    ranks["numerical"] = count_above(sigma, numerical_edge)
    ranks["noise_floor"] = count_above(sigma, max(noise_edge, numerical_edge))
    return ranks


def top_k_ranks(
    sigma: npt.ArrayLike,
    total: float,
    thresholds: tuple[float, ...],
    numerical_edge: float,
    noise_edge: float,
) -> dict[str, float | None]:
    """The rank measures that the top-k σ of an approximate solver and the exact ‖ΔW‖_F² = `total` determine.

    Energy ranks are measured against the exact total and are None when the top k do not reach τ; stable rank
    uses the exact total; a count that reaches k is None (the true count may be larger); entropy and
    participation need every σ and are None. Never a capped number presented as exact.
    """
    s = _as_array(sigma)
    energy = s**2
    ranks: dict[str, float | None] = {
        threshold_key(t): partial_energy_rank(energy, t, total) for t in thresholds
    }
    ranks["entropy"] = None
    ranks["stable"] = float(total / s.max() ** 2) if s.size and s.max() > 0 else 0.0
    ranks["participation"] = None
    for key, edge in (("numerical", numerical_edge), ("noise_floor", max(noise_edge, numerical_edge))):
        count = count_above(s, edge)
        ranks[key] = count if count < s.size else None
    return ranks


def threshold_key(tau: float) -> str:
    """Result key of an energy threshold: 0.9 -> `energy_90`, 0.995 -> `energy_99.5`."""
    percent = round(tau * 100, 6)
    return f"energy_{int(percent)}" if percent == int(percent) else f"energy_{percent:g}"
