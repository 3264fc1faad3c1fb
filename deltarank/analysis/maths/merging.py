"""What TIES and DARE do to a set of weight deltas of one matrix: pure functions on tensors.

TIES-Merging (Yadav et al. 2023, arXiv 2306.01708) trims each delta to its top `density` share of entries by
magnitude, elects one sign per entry and averages the kept values that agree with it: the sign conflicts
among the trimmed deltas are what its election resolves. DARE (Yu et al. 2024, arXiv 2311.03099) drops each
entry of a delta with probability p and rescales the rest by 1/(1 − p): an unbiased estimate of the delta.

Trim (TIES's first step): of the N = m·n entries, k = max(1, ⌊density·N⌋) are kept (TIES's reference code and
mergekit take ⌊density·N⌋), those with |x| ≥ the k-th largest |x| (the reference's `>=`: every entry tied at
the threshold is kept) and x ≠ 0 (an entry that did not move has no sign). A trimmed delta is held as its signs
s ∈ {−1, 0, +1}, int8, 0 where not kept.

Sign conflict of a pair (a, b): among the positions both keep, the share where s_a ≠ s_b (two deltas with
independent signs give 1/2). The n-way rate: among the positions kept by at least two deltas, the share
where the kept values do not all have one sign. Both are None when no position qualifies.

DARE error. With keep indicators b_ij ~ Bernoulli(q), q = 1 − p, independent, DARE(X) = X ∘ b / q and

    ‖DARE(X) − X‖_F² = Σ_ij x_ij² (b_ij/q − 1)²,   E (b/q − 1)² = q·(p/q)² + p = p/q,

so the squared relative error has the exact expectation E‖DARE(X) − X‖_F² / ‖X‖_F² = p / (1 − p), and the
relative error ‖DARE(X) − X‖_F / ‖X‖_F is √(p/(1 − p)) up to a factor E√Z/√(EZ) ≤ 1 (Jensen) that tends to 1 as
no entry dominates: the squared relative error has variance (Σ x⁴ / (Σ x²)²) · (p⁴/q³ + p − p²/q²) (it is
exactly 1 at p = 1/2, where every entry contributes x² whether dropped or kept). For the merged sum with an
independent mask per delta, the cross terms have mean zero:

    E‖Σ_a DARE(X_a) − Σ_a X_a‖_F² / ‖Σ_a X_a‖_F² = p/(1 − p) · Σ_a ‖X_a‖_F² / ‖Σ_a X_a‖_F².

Masks are drawn from uniforms u_ij ∈ [0, 1) (float32, NumPy's PCG64 seeded by a `numpy.random.SeedSequence`),
dropped where u < p: the masks of several drop rates are nested (one draw per entry), each with DARE's law.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from deltarank.analysis.maths.placement import squared_norm

Rates = tuple[float | None, ...]


def trim_count(entries: int, density: float) -> int:
    """k = max(1, ⌊density·N⌋) entries of N kept by TIES's trim (N for density 1)."""
    return min(entries, max(1, int(density * entries)))


def trimmed_signs(delta: torch.Tensor, density: float) -> torch.Tensor:
    """The signs of the entries TIES's trim keeps, 0 elsewhere.

    Args:
        delta: ΔW, shape (m, n), any float dtype and device.
        density: Share of entries kept, in (0, 1].

    Returns:
        int8 tensor of shape (m, n) with values −1, 0, +1.
    """
    magnitude = delta.abs()
    entries = magnitude.numel()
    if entries == 0:
        return torch.zeros_like(delta, dtype=torch.int8)
    k = trim_count(entries, density)
    threshold = torch.kthvalue(magnitude.flatten(), entries - k + 1).values  # the k-th largest |x|
    keep = (magnitude >= threshold) & (magnitude > 0)
    del magnitude
    return torch.sign(delta).to(torch.int8) * keep


def pairwise_sign_conflicts(signs: Sequence[torch.Tensor]) -> tuple[Rates, ...]:
    """n × n: for each pair (a, b), among positions both trimmed deltas keep, the share of opposite signs.

    The diagonal is 0 (a delta agrees with itself) unless the delta keeps nothing (None). Shapes: n tensors
    (m, n) of int8 signs (`trimmed_signs`) -> n rows of n rates.
    """
    count = len(signs)
    table: list[list[float | None]] = [[None] * count for _ in range(count)]
    for a in range(count):
        for b in range(a, count):
            shared = int(((signs[a] != 0) & (signs[b] != 0)).sum())
            differ = int((signs[a] * signs[b] < 0).sum())  # −1 only for opposite kept signs
            table[a][b] = table[b][a] = differ / shared if shared else None
    return tuple(tuple(row) for row in table)


def nway_sign_conflict(signs: Sequence[torch.Tensor]) -> float | None:
    """Among positions kept by at least two trimmed deltas, the share whose kept values do not share one sign.

    Shapes: n tensors (m, n) of int8 signs -> a rate, None when no position is kept twice.
    """
    if not signs:
        return None
    positive = torch.zeros_like(signs[0], dtype=torch.int16)
    negative = torch.zeros_like(signs[0], dtype=torch.int16)
    for s in signs:
        positive += s > 0
        negative += s < 0
    shared = int((positive + negative >= 2).sum())
    mixed = int(((positive > 0) & (negative > 0)).sum())
    return mixed / shared if shared else None


def dare_uniforms(shape: tuple[int, int], entropy: Sequence[int]) -> np.ndarray:
    """The uniforms u ∈ [0, 1) a DARE mask is drawn from (dropped where u < p), float32, shape `shape`, from
    NumPy's PCG64 seeded by `SeedSequence(entropy)`: the same on every machine, device and precision."""
    generator = np.random.Generator(np.random.PCG64(np.random.SeedSequence(list(entropy))))
    return generator.random(shape, dtype=np.float32)


def dare_residual(delta: torch.Tensor, uniforms: torch.Tensor, drop: float) -> torch.Tensor:
    """DARE(ΔW) − ΔW at drop rate p: ΔW·p/(1 − p) where kept (u ≥ p), −ΔW where dropped.

    Shapes: delta (m, n), uniforms (m, n) on the same device -> (m, n) in delta's dtype.
    """
    keep = uniforms >= drop
    return torch.where(keep, delta * (drop / (1.0 - drop)), -delta)


def relative_error(residual_squared: float, reference_squared: float) -> float | None:
    """√(‖residual‖² / ‖reference‖²), None when the reference is 0."""
    return float(np.sqrt(residual_squared / reference_squared)) if reference_squared > 0 else None


def dare_errors(
    deltas: Sequence[torch.Tensor], drops: Sequence[float], uniforms: Callable[[int], torch.Tensor]
) -> tuple[tuple[Rates, ...], Rates]:
    """Relative Frobenius errors of DARE, per delta and for the merged sum, at each drop rate.

    Args:
        deltas: The n deltas ΔW_a, each (m, n), one dtype and device.
        drops: Drop rates p, each in [0, 1).
        uniforms: a -> the (m, n) uniforms of delta a's mask (`dare_uniforms`), on the deltas' device; called
            once per delta, so one set of uniforms is held at a time.

    Returns:
        ([per drop rate: ‖DARE(ΔW_a) − ΔW_a‖_F / ‖ΔW_a‖_F for each a], [per drop rate:
        ‖Σ_a DARE(ΔW_a) − Σ_a ΔW_a‖_F / ‖Σ_a ΔW_a‖_F]); None where the reference norm is 0.
    """
    if not deltas or not drops:
        return tuple(() for _ in drops), tuple(None for _ in drops)
    merged = [torch.zeros_like(deltas[0]) for _ in drops]  # Σ_a (DARE(ΔW_a) − ΔW_a), one per drop rate
    errors: list[list[float | None]] = [[] for _ in drops]
    for index, delta in enumerate(deltas):
        draw = uniforms(index)
        reference = squared_norm(delta)
        for slot, drop in enumerate(drops):
            residual = dare_residual(delta, draw, drop)
            errors[slot].append(relative_error(squared_norm(residual), reference))
            merged[slot] += residual
            del residual
        del draw
    total = deltas[0].clone()
    for delta in deltas[1:]:
        total += delta
    reference = squared_norm(total)
    del total
    merged_errors = tuple(relative_error(squared_norm(residual), reference) for residual in merged)
    return tuple(tuple(row) for row in errors), merged_errors


def expected_dare_squared_error(drop: float) -> float:
    """E‖DARE(X) − X‖_F² / ‖X‖_F² = p/(1 − p), exactly, for any fixed X ≠ 0."""
    return drop / (1.0 - drop)


def dare_squared_error_variance(delta: np.ndarray, drop: float) -> float:
    """Var(‖DARE(X) − X‖_F² / ‖X‖_F²) = (Σ x⁴ / (Σ x²)²) · (p⁴/q³ + p − p²/q²), q = 1 − p."""
    q = 1.0 - drop
    squares = np.square(np.asarray(delta, dtype=np.float64))
    weight = float(np.sum(np.square(squares)) / np.sum(squares) ** 2)
    return weight * (drop**4 / q**3 + drop - drop**2 / q**2)
