"""How the singular values of a dense delta are computed: the exact solvers and the one approximate one.

- `svd`: `torch.linalg.svdvals` in the compute dtype (the reference).
- `gram`: eigenvalues of the float64 Gram matrix of the smaller side, σ_i = √λ_i(ΔWᵀΔW). On CPU a single
  matrix goes to BLAS `dsyrk` (the symmetric product: half the flops of a general one) and LAPACK `dsyevd`
  (eigenvalues only) through SciPy, whose OpenBLAS runs these faster here than torch's MKL build (AMD EPYC,
  2 cores, `benchmarks/solver_shapes.py`: 576² 17 ms vs torch's Gram 32 ms vs float32 SVD 24 ms; 1024 × 2816
  97 ms vs 142 ms vs 520 ms).
  Batches and CUDA tensors use torch. Error bound (tested against a float64 SVD): |σ̂_i − σ_i| ≤ GRAM_ERROR·σ₁ with
  GRAM_ERROR = √(n·ε₆₄) (≈ 1e-7 at n = 4096), no worse than a float32 SVD's own error (≈ n·ε₃₂·σ₁).
- `randomized`: the top-k σ by a randomised SVD (`torch.svd_lowrank`); approximate and labelled so.

`auto` picks `gram` on CPU at float32 precision, and `svd` otherwise (float64 precision keeps the float64
SVD, whose error is far below the Gram bound; on CUDA the batched SVD kernels are used).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.linalg import blas, lapack

from deltarank.errors import DeltarankError

EXACT_SOLVERS = ("svd", "gram")
SOLVERS = ("auto", *EXACT_SOLVERS, "randomized")
RANDOMIZED_ITERS = 4
RANDOMIZED_OVERSAMPLE = 8


def gram_error_bound(n: int) -> float:
    """Relative (to σ₁) bound on the absolute σ error of the float64 Gram solver: √(n·ε₆₄)."""
    return math.sqrt(max(n, 1) * torch.finfo(torch.float64).eps)


def resolve_solver(solver: str, device: torch.device, precision: torch.dtype) -> str:
    """The concrete solver for `auto` (see module docstring); checks the name."""
    if solver not in SOLVERS:
        raise DeltarankError(f"unknown solver {solver!r} (one of {', '.join(SOLVERS)})")
    if solver != "auto":
        return solver
    return "gram" if device.type == "cpu" and precision == torch.float32 else "svd"


def singular_values(delta: torch.Tensor, solver: str, top_k: int | None = None) -> torch.Tensor:
    """σ of one (m, n) or a batch (B, m, n) of deltas, descending along the last dim.

    Args:
        delta: The delta(s), already in the compute dtype and on the compute device.
        solver: `svd`, `gram` or `randomized` (resolved, not `auto`).
        top_k: Number of σ for `randomized`.

    Returns:
        (min(m, n),) or (B, min(m, n)); (top_k,) / (B, top_k) for `randomized`.
    """
    if solver == "svd":
        return torch.linalg.svdvals(delta)
    if solver == "gram":
        return gram_singular_values(delta)
    if solver == "randomized":
        return randomized_singular_values(delta, top_k or 1)
    raise DeltarankError(f"unknown solver {solver!r}")


def gram_singular_values(delta: torch.Tensor) -> torch.Tensor:
    """σ_i = √λ_i of the float64 Gram matrix of the smaller side. Shapes: (…, m, n) -> (…, min(m, n))."""
    if delta.device.type == "cpu" and delta.dim() == 2 and delta.numel() > 0:
        return _lapack_gram_singular_values(delta)
    wide = delta.to(torch.float64)
    rows, cols = wide.shape[-2], wide.shape[-1]
    gram = wide.mT @ wide if rows >= cols else wide @ wide.mT  # (…, n, n), n = min(m, n)
    eigenvalues = torch.linalg.eigvalsh(gram)  # ascending
    return eigenvalues.flip(-1).clamp_min(0).sqrt().to(delta.dtype)


def _lapack_gram_singular_values(delta: torch.Tensor) -> torch.Tensor:
    """`gram_singular_values` of one CPU matrix by BLAS dsyrk + LAPACK dsyevd. Shapes: (m, n) -> (min(m, n),)."""
    values = (
        delta.detach().numpy().astype(np.float64)
    )  # (m, n) C order, so values.T is Fortran (n, m): no copy
    rows, cols = values.shape
    # dsyrk(trans=0) on Xᵀ gives XᵀX (n × n); trans=1 gives XXᵀ (m × m). Upper triangle only.
    gram = blas.dsyrk(1.0, values.T, trans=0 if rows >= cols else 1)
    del values
    eigenvalues, _, info = lapack.dsyevd(gram, compute_v=0, lower=0, overwrite_a=1)  # ascending
    if info != 0:
        raise DeltarankError(f"LAPACK dsyevd failed (info {info}) on a {rows}×{cols} delta")
    sigma = np.sqrt(np.clip(eigenvalues[::-1], 0.0, None))
    return torch.from_numpy(sigma.copy()).to(delta.dtype)


def randomized_singular_values(delta: torch.Tensor, top_k: int) -> torch.Tensor:
    """Approximate top-k σ by a randomised SVD with oversampling. Shapes: (m, n) -> (k,)."""
    k = min(top_k, *delta.shape[-2:])
    q = min(k + RANDOMIZED_OVERSAMPLE, *delta.shape[-2:])
    if delta.dim() == 2:
        _, sigma, _ = torch.svd_lowrank(delta, q=q, niter=RANDOMIZED_ITERS)
        return sigma[:k]
    return torch.stack([randomized_singular_values(d, top_k) for d in delta])
