"""Singular values of a weight delta: pure maths on tensors, no I/O.

- Dense: ΔW = W' − W computed after the upcast (its σ come from `solvers.singular_values`).
- LoRA (exact fast path): σ(s·B·A) = σ(s·R_B·R_Aᵀ) with B = Q_B R_B and Aᵀ = Q_A R_A, an r × r SVD,
  O((out + in)·r²) instead of O(out·in·min(out, in)); B·A is never formed.
- DoRA: W' = m ⊙ (W + s·B·A) / ‖W + s·B·A‖_row, so ΔW = W' − W needs the base weights and is dense.
"""

from __future__ import annotations

import torch


def dense_delta(base: torch.Tensor, tuned: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """ΔW = tuned − base, each upcast to `dtype` before subtracting. Shapes: (m, n), (m, n) -> (m, n)."""
    return tuned.to(dtype) - base.to(dtype)


def lora_singular_values(b: torch.Tensor, a: torch.Tensor, scale: float, dtype: torch.dtype) -> torch.Tensor:
    """The r singular values of s·B·A from its factors, without forming B·A.

    Args:
        b: B, shape (out, r).
        a: A, shape (r, in).
        scale: s = α/r (or α/√r with rsLoRA).
        dtype: compute dtype (factors are upcast first).

    Returns:
        σ (r,), descending, non-negative.
    """
    _, r_b = torch.linalg.qr(b.to(dtype))  # (out, r) -> R_B (r, r)
    _, r_a = torch.linalg.qr(a.to(dtype).T)  # (in, r) -> R_A (r, r)
    return torch.linalg.svdvals(r_b @ r_a.T) * abs(scale)  # (r,)


def lora_delta(b: torch.Tensor, a: torch.Tensor, scale: float, dtype: torch.dtype) -> torch.Tensor:
    """s·B·A formed explicitly, shape (out, in): only for DoRA and for tests, never for a LoRA spectrum."""
    return scale * (b.to(dtype) @ a.to(dtype))


def dora_delta(
    base: torch.Tensor,
    b: torch.Tensor,
    a: torch.Tensor,
    magnitude: torch.Tensor,
    scale: float,
    dtype: torch.dtype,
) -> torch.Tensor:
    """ΔW of a DoRA module: m ⊙ (W + s·B·A) / ‖W + s·B·A‖_row − W.

    Shapes: base (out, in), b (out, r), a (r, in), magnitude (out,) -> (out, in). The norm runs over the input
    dimension of each output row, as peft's `DoraLinearLayer.get_weight_norm`.
    """
    w = base.to(dtype)
    adapted = w + lora_delta(b, a, scale, dtype)  # (out, in)
    row_norm = torch.linalg.vector_norm(adapted, dim=1, keepdim=True)  # (out, 1)
    return magnitude.to(dtype).reshape(-1, 1) * adapted / row_norm - w
