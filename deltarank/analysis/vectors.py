"""Singular vectors of a weight delta and the tuned weights of a loaded pair: pure maths on tensors, no I/O.

Every matrix is taken in its stored orientation (the base weight's shape, (out, in) for `nn.Linear`), so a
dense pair and a LoRA pair of the same module give vectors in the same space; a `fan_in_fan_out` adapter's
s·B·A is transposed to the stored (in, out) layout.

- Dense ΔW: ΔW = U Σ Vᵀ by a thin SVD.
- LoRA s·B·A (exact, never forming B·A): B = Q_B R_B, Aᵀ = Q_A R_A, R_B R_Aᵀ = U_r Σ_r V_rᵀ (an r × r SVD), so
  s·B·A = (Q_B U_r) (|s| Σ_r) (Q_A V_r)ᵀ, with the sign of s folded into U.
- DoRA: ΔW = m ⊙ (W + s·B·A) / ‖W + s·B·A‖_row − W is dense and goes through the thin SVD.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from deltarank.analysis.measure import Loaded, LoadedAdapter, LoadedDense
from deltarank.analysis.spectrum import dense_delta, dora_delta, lora_delta


@dataclass(frozen=True)
class DeltaSVD:
    """A thin SVD ΔW = U diag(σ) Vᵀ in the stored orientation of the weight.

    Attributes:
        u: Left singular vectors, shape (m, k), columns in descending σ order.
        s: Singular values, shape (k,), descending, non-negative.
        v: Right singular vectors, shape (n, k).
        kind: dense, lora or dora.
    """

    u: torch.Tensor
    s: torch.Tensor
    v: torch.Tensor
    kind: str

    def significant(self, shape: tuple[int, int]) -> int:
        """How many σ exceed the numerical cut-off σ₁ · max(m, n) · eps(dtype); vectors past it are arbitrary."""
        if self.s.numel() == 0:
            return 0
        cutoff = float(self.s[0]) * max(shape) * torch.finfo(self.s.dtype).eps
        return int((self.s > cutoff).sum())


def kind_of(loaded: Loaded) -> str:
    """dense (two checkpoints), lora (factors) or dora (factors and magnitude)."""
    if isinstance(loaded, LoadedDense):
        return "dense"
    return "dora" if loaded.pair.dora else "lora"


def dense_svd(delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Thin SVD of a (m, n) matrix: U (m, k), σ (k,), V (n, k) with k = min(m, n)."""
    u, s, vh = torch.linalg.svd(delta, full_matrices=False)  # (m, k), (k,), (k, n)
    return u, s, vh.mT


def lora_svd(
    b: torch.Tensor, a: torch.Tensor, scale: float, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Thin SVD of s·B·A from its factors, without forming B·A.

    s·B·A = (Q_B U_r)(|s| Σ_r)(Q_A V_r)ᵀ, where B = Q_B R_B, Aᵀ = Q_A R_A and R_B R_Aᵀ = U_r Σ_r V_rᵀ.

    Args:
        b: B, shape (out, r).
        a: A, shape (r, in).
        scale: s = α/r (or α/√r with rsLoRA).
        dtype: Compute dtype (factors are upcast first).

    Returns:
        U (out, r'), σ (r',), V (in, r') with r' = min(r, out, in), σ descending.
    """
    q_b, r_b = torch.linalg.qr(b.to(dtype))  # (out, r'), (r', r)
    q_a, r_a = torch.linalg.qr(a.to(dtype).mT)  # (in, r'), (r', r)
    u_r, s_r, vh_r = torch.linalg.svd(r_b @ r_a.mT)  # (r', r'), (r',), (r', r')
    sign = -1.0 if scale < 0 else 1.0
    return sign * (q_b @ u_r), s_r * abs(scale), q_a @ vh_r.mT


def delta_svd(loaded: Loaded, dtype: torch.dtype) -> DeltaSVD:
    """Thin SVD of ΔW of one loaded pair in the stored orientation, via the LoRA fast path when it applies."""
    kind = kind_of(loaded)
    if isinstance(loaded, LoadedAdapter) and kind == "lora":
        u, s, v = lora_svd(loaded.b, loaded.a, loaded.pair.module.scale, dtype)
        if loaded.pair.fan_in_fan_out:  # stored (in, out): ΔW_stored = (s·B·A)ᵀ = V Σ Uᵀ
            u, v = v, u
        return DeltaSVD(u, s, v, kind)
    u, s, v = dense_svd(delta_matrix(loaded, dtype))
    return DeltaSVD(u, s, v, kind)


def delta_matrix(loaded: Loaded, dtype: torch.dtype) -> torch.Tensor:
    """ΔW of one loaded pair as a dense matrix in the stored orientation, shape = base shape.

    Dense: W' − W after the upcast. LoRA: s·B·A (transposed for fan_in_fan_out). DoRA: the dora_delta.
    """
    if isinstance(loaded, LoadedDense):
        return dense_delta(loaded.base, loaded.tuned, dtype)
    pair = loaded.pair
    if pair.dora:
        assert loaded.base is not None and loaded.magnitude is not None
        base = loaded.base.mT if pair.fan_in_fan_out else loaded.base  # DoRA maths on (out, in)
        delta = dora_delta(base, loaded.b, loaded.a, loaded.magnitude, pair.module.scale, dtype)
    else:
        delta = lora_delta(loaded.b, loaded.a, pair.module.scale, dtype)  # (out, in)
    return delta.mT if pair.fan_in_fan_out else delta


def tuned_weight(loaded: Loaded, base: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """W' of one loaded pair in `dtype`: the tuned tensor, or W + ΔW merged in `dtype` for an adapter."""
    if isinstance(loaded, LoadedDense):
        return loaded.tuned.to(dtype)
    return base.to(dtype) + delta_matrix(loaded, dtype)
