"""Where a weight delta lands relative to the base weight's singular directions: pure functions on tensors.

W₀ = U Σ Vᵀ is the thin SVD of the base weight (`svd.weight_svd`: p = min(m, n) directions on each side, as the
intruder analysis uses them). For a delta ΔW:

- the share of ‖ΔW‖_F² in the span of W₀'s top-k left singular vectors is ‖U_kᵀ ΔW‖_F² / ‖ΔW‖_F², on the right
  ‖ΔW V_k‖_F² / ‖ΔW‖_F²; the bottom-k share takes the last k columns (W₀'s smallest σ). The columns being
  orthonormal, each share is a sum of per-direction energies e_i = ‖u_iᵀ ΔW‖² (or ‖ΔW v_i‖²), so one product
  gives every k. PiSSA initialises in the top directions, MiLoRA in the bottom ones. For k > p/2 the two
  sets overlap. For a tall W₀ (m > n) the n left vectors do not span R^m: the rest of R^m (where W₀ has
  σ = 0, no unique basis) belongs to neither share, so the left shares may sum to less than 1.
- chance: a ΔW whose law is invariant under rotations (i.i.d. Gaussian entries) puts, in expectation, the share
  k/d of its energy in any fixed k-dimensional subspace of R^d (d = m on the left, n on the right); every share
  is read against it. For Gaussian entries the left share is Beta(k·n/2, (m − k)·n/2): variance
  2·c·(1 − c)/(m·n + 2) around c = k/m.
- the principal angles between W₀'s and W''s top-k subspaces: θ_j = arccos σ_j(U_kᵀ U'_k) (Björck & Golub
  1973), reported as cosines, descending; their mean cos² is ‖U_kᵀ U'_k‖_F² / k (1: the same subspace; k/d
  for two random ones). From cosines, angles below ~1e-3 rad (float32) or ~1e-8 rad (float64) read as 0.
- the relative change of W₀'s top singular values, index by index: (σ_i(W') − σ_i(W₀)) / σ_i(W₀).

A top-k subspace is defined only where σ_k > σ_{k+1}; a trained weight's σ are distinct in practice.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch

FloatArray = npt.NDArray[np.float64]


def direction_energies(
    delta: torch.Tensor, u: torch.Tensor, v: torch.Tensor
) -> tuple[FloatArray, FloatArray]:
    """Energy of ΔW along each of W₀'s singular directions: ‖u_iᵀ ΔW‖² (left) and ‖ΔW v_i‖² (right).

    Shapes: delta (m, n), u (m, p), v (n, p), one dtype and device -> two (p,) float64 arrays (sums of the
    squares accumulated in float64).
    """
    left = (u.mT @ delta).square_()  # (p, n): ΔW in W₀'s left basis, squared in place
    left_energy = torch.sum(left, dim=1, dtype=torch.float64)  # (p,)
    del left
    right = (delta @ v).square_()  # (m, p)
    right_energy = torch.sum(right, dim=0, dtype=torch.float64)  # (p,)
    return left_energy.cpu().numpy(), right_energy.cpu().numpy()


def squared_norm(delta: torch.Tensor) -> float:
    """‖ΔW‖_F², the squares summed in float64. Shapes: (m, n) -> scalar."""
    return float(torch.sum(delta * delta, dtype=torch.float64))


def subspace_shares(energies: FloatArray, total: float, k: int) -> tuple[float | None, float | None]:
    """(top-k share, bottom-k share) of `total` = ‖ΔW‖_F² from the per-direction energies (descending σ of W₀).

    Clipped to [0, 1] (rounding can carry a share of exactly 1 a few ulps past it); (None, None) when ΔW = 0 or
    k = 0, where no share is defined.
    """
    if total <= 0.0 or k <= 0:
        return None, None
    k = min(k, energies.size)
    top = float(np.sum(energies[:k])) / total
    bottom = float(np.sum(energies[energies.size - k :])) / total
    return min(max(top, 0.0), 1.0), min(max(bottom, 0.0), 1.0)


def chance_share(k: int, dimension: int) -> float:
    """k/d: the expected share of a rotation-invariant random ΔW's energy in a fixed k-dim subspace of R^d."""
    return min(1.0, k / dimension) if dimension > 0 else 1.0


def principal_cosines(first: torch.Tensor, second: torch.Tensor) -> FloatArray:
    """Cosines of the principal angles between the spans of two sets of orthonormal columns, descending.

    Shapes: (d, k), (d, k) -> (k,) float64 in [0, 1].
    """
    overlap = (first.mT @ second).to(torch.float64)  # (k, k)
    cosines = torch.linalg.svdvals(overlap).clamp(0.0, 1.0)
    return cosines.cpu().numpy()


def mean_squared_cosine(cosines: FloatArray) -> float:
    """Mean cos² of principal angles: ‖U_kᵀ U'_k‖_F² / k (1.0 for no angle at all)."""
    return float(np.mean(np.square(cosines))) if cosines.size else 1.0


def relative_sigma_change(
    base_sigma: npt.ArrayLike, tuned_sigma: npt.ArrayLike, top: int
) -> tuple[float | None, ...]:
    """(σ_i(W') − σ_i(W₀)) / σ_i(W₀) for i = 1 … min(top, p), None where σ_i(W₀) = 0."""
    base = np.asarray(base_sigma, dtype=np.float64)
    tuned = np.asarray(tuned_sigma, dtype=np.float64)
    count = min(top, base.size, tuned.size)
    return tuple(None if base[i] == 0.0 else float((tuned[i] - base[i]) / base[i]) for i in range(count))
