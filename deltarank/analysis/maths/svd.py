"""Every singular value decomposition of deltarank: σ and thin SVDs of a `Delta`, dense or low-rank.

Low-rank deltas s·L·R (LoRA factors, exact, never forming L·R): L = Q_L R_L, Rᵀ = Q_R R_R and
R_L R_Rᵀ = U_r Σ_r V_rᵀ, an r × r SVD, so s·L·R = (Q_L U_r)(|s| Σ_r)(Q_R V_r)ᵀ with the sign of s folded into U:
O((m + n)·r²) instead of O(m·n·min(m, n)).

Kronecker deltas s·(A ⊗ B) (LoKr): A = U_A Σ_A V_Aᵀ and B = U_B Σ_B V_Bᵀ give
s·(A ⊗ B) = (U_A ⊗ U_B)(|s| Σ_A ⊗ Σ_B)(V_A ⊗ V_B)ᵀ: the σ are the products σ_i(A)σ_j(B), from two small SVDs.

Dense deltas, by solver:

- `svd`: `torch.linalg.svdvals` in the compute dtype (the reference).
- `gram`: eigenvalues of the float64 Gram matrix of the smaller side, σ_i = √λ_i(ΔWᵀΔW). On CPU a single
  matrix goes to NumPy: `x.T @ x` runs BLAS `dsyrk` (the symmetric product: half the flops of a general one)
  and `eigvalsh` LAPACK `dsyevd` (eigenvalues only), both in NumPy's OpenBLAS, which runs them faster here
  than torch's MKL build and releases the GIL, so several matrices can be decomposed at once (see
  `deltarank.analysis.engine.schedule`; per-shape times in `benchmarks/results/solvers.md`).
  Batches and CUDA tensors use torch. Error bound (tested against a float64 SVD): |σ̂_i − σ_i| ≤ GRAM_ERROR·σ₁ with
  GRAM_ERROR = √(n·ε₆₄) (≈ 1e-7 at n = 4096), no worse than a float32 SVD's own error (≈ n·ε₃₂·σ₁).
- `randomized`: the top-k σ by a seeded randomised range finder (Halko et al. 2011, with power iterations);
  approximate and labelled so, and the same on every run.

`auto` picks `gram` on CPU at float32 precision, and `svd` otherwise (float64 precision keeps the float64
SVD, whose error is far below the Gram bound; on CUDA the batched SVD kernels are used).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from deltarank.analysis.maths.arrays import FLOAT_DTYPES, LARGE_ENTRIES, row_blocks
from deltarank.analysis.maths.deltas import Delta
from deltarank.analysis.maths.randomized import seeded_top_sigma
from deltarank.errors import DeltarankError, OptionError

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
        raise OptionError(f"unknown solver {solver!r} (one of {', '.join(SOLVERS)})")
    if solver != "auto":
        return solver
    return "gram" if device.type == "cpu" and precision == torch.float32 else "svd"


def delta_singular_values(delta: Delta, solver: str, top_k: int | None = None) -> torch.Tensor:
    """σ of one delta: all min(m, n) of them (the ones past r of a low-rank delta are exactly 0), or the top-k
    under the randomized solver (dense deltas only: the factor core is exact and cheaper)."""
    if delta.matrix is not None:
        return singular_values(delta.matrix, solver, top_k)
    if delta.kron is not None:
        first, second = delta.kron
        core = kronecker_singular_values(first, second, delta.scale)
        rows, cols = first.shape[0] * second.shape[0], first.shape[1] * second.shape[1]
    else:
        assert delta.left is not None and delta.right is not None
        core = factored_singular_values(delta.left, delta.right, delta.scale)
        rows, cols = delta.left.shape[0], delta.right.shape[1]
    full = torch.zeros(min(rows, cols), dtype=core.dtype, device=core.device)
    full[: core.numel()] = core
    return full


def kronecker_singular_values(first: torch.Tensor, second: torch.Tensor, scale: float) -> torch.Tensor:
    """σ of s·(A ⊗ B): every product σ_i(A)σ_j(B), descending. Shapes: (a, c), (b, d) -> (min(a, c)·min(b, d),)."""
    products = torch.outer(torch.linalg.svdvals(first), torch.linalg.svdvals(second)).flatten() * abs(scale)
    return torch.sort(products, descending=True).values


def kronecker_svd(
    first: torch.Tensor, second: torch.Tensor, scale: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Thin SVD of s·(A ⊗ B): U_A ⊗ U_B, σ_A ⊗ σ_B, V_A ⊗ V_B, ordered by descending σ (sign of s folded into U).

    Shapes: (a, c), (b, d) -> U (a·b, k), σ (k,), V (c·d, k) with k = min(a, c)·min(b, d).
    """
    u_a, s_a, vh_a = torch.linalg.svd(first, full_matrices=False)
    u_b, s_b, vh_b = torch.linalg.svd(second, full_matrices=False)
    sigma = torch.outer(s_a, s_b).flatten() * abs(scale)
    order = torch.argsort(sigma, descending=True)
    sign = -1.0 if scale < 0 else 1.0
    u = sign * torch.kron(u_a, u_b)[:, order]
    v = torch.kron(vh_a.mT, vh_b.mT)[:, order]
    return u, sigma[order], v


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
        # cuSOLVER's default for batches (Jacobi, gesvdj) lost 1.6e-5·σ₁ on an H200 where the CPU's LAPACK and
        # the QR-based gesvd keep float32 accuracy (benchmarks/results/gpu.md): ask for gesvd on CUDA.
        return torch.linalg.svdvals(delta, driver="gesvd" if delta.is_cuda else None)
    if solver == "gram":
        return gram_singular_values(delta)
    if solver == "randomized":
        return randomized_singular_values(delta, top_k or 1)
    raise DeltarankError(f"unknown solver {solver!r}")


def gram_singular_values(delta: torch.Tensor) -> torch.Tensor:
    """σ_i = √λ_i of the float64 Gram matrix of the smaller side. Shapes: (…, m, n) -> (…, min(m, n))."""
    if delta.device.type == "cpu" and delta.dim() == 2 and delta.numel() > 0:
        return _host_gram_singular_values(delta)
    wide = delta.to(torch.float64)
    rows, cols = wide.shape[-2], wide.shape[-1]
    gram = wide.mT @ wide if rows >= cols else wide @ wide.mT  # (…, n, n), n = min(m, n)
    eigenvalues = torch.linalg.eigvalsh(gram)  # ascending
    return eigenvalues.flip(-1).clamp_min(0).sqrt().to(delta.dtype)


def _host_gram_singular_values(delta: torch.Tensor) -> torch.Tensor:
    """`gram_singular_values` of one CPU matrix in NumPy (no torch op). Shapes: (m, n) -> (min(m, n),)."""
    array = delta.detach().numpy()
    rows, cols = array.shape
    if array.size > LARGE_ENTRIES and max(rows, cols) >= 2 * min(rows, cols):
        # The float64 copy would be over twice the Gram: widen one block of the long side at a time.
        gram = _blocked_gram(array if rows >= cols else array.T)
    else:
        values = array.astype(np.float64)  # float32 products are exact in float64
        # NumPy sends a product of an array with its own transpose to dsyrk.
        gram = values.T @ values if rows >= cols else values @ values.T
        del values
    try:
        eigenvalues = np.linalg.eigvalsh(gram)  # ascending
    except np.linalg.LinAlgError as exc:
        raise DeltarankError(f"LAPACK dsyevd failed ({exc}) on a {tuple(delta.shape)} delta") from None
    sigma = np.sqrt(np.clip(eigenvalues[::-1], 0.0, None))
    return torch.from_numpy(sigma.astype(FLOAT_DTYPES[delta.dtype]))


def _blocked_gram(tall: np.ndarray) -> np.ndarray:
    """tallᵀ·tall in float64, summed over blocks of rows (each block widened on its own, then dsyrk).

    Memory: the n × n Gram, one product buffer of the same size and one float64 block, instead of a float64
    copy of the whole (m, n) matrix. The sum runs in a different order than one dsyrk call, well inside the
    solver's √(n·ε₆₄)·σ₁ bound.
    """
    cols = tall.shape[1]
    gram = np.zeros((cols, cols))
    product = np.empty((cols, cols))
    for rows in row_blocks(*tall.shape):
        block = tall[rows].astype(np.float64)
        np.matmul(block.T, block, out=product)
        gram += product
    return gram


def randomized_singular_values(delta: torch.Tensor, top_k: int) -> torch.Tensor:
    """Approximate top-k σ by a randomised SVD with oversampling. Shapes: (m, n) -> (k,)."""
    k = min(top_k, *delta.shape[-2:])
    q = min(k + RANDOMIZED_OVERSAMPLE, *delta.shape[-2:])
    if delta.dim() == 2:
        return seeded_top_sigma(delta, q, RANDOMIZED_ITERS)[:k]
    return torch.stack([randomized_singular_values(d, top_k) for d in delta])


def factored_singular_values(left: torch.Tensor, right: torch.Tensor, scale: float) -> torch.Tensor:
    """The r singular values of s·L·R from its factors, without forming L·R. Shapes: (m, r), (r, n) -> (r,)."""
    _, r_l = torch.linalg.qr(left)  # (m, r) -> R_L (r, r)
    _, r_r = torch.linalg.qr(right.mT)  # (n, r) -> R_R (r, r)
    return torch.linalg.svdvals(r_l @ r_r.mT) * abs(scale)  # (r,)


def factored_svd(
    left: torch.Tensor, right: torch.Tensor, scale: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Thin SVD of s·L·R from its factors: U (m, r'), σ (r',), V (n, r'), r' = min(r, m, n), σ descending."""
    q_l, r_l = torch.linalg.qr(left)  # (m, r'), (r', r)
    q_r, r_r = torch.linalg.qr(right.mT)  # (n, r'), (r', r)
    u_r, s_r, vh_r = torch.linalg.svd(r_l @ r_r.mT)  # (r', r'), (r',), (r', r')
    sign = -1.0 if scale < 0 else 1.0
    return sign * (q_l @ u_r), s_r * abs(scale), q_r @ vh_r.mT


def weight_svd(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Thin SVD of one dense matrix in its stored orientation: the decomposition of whole weights (W₀ and W'
    in intruders and placement) and of dense deltas (`delta_svd`).

    Shapes: (m, n) -> U (m, p), σ (p,) descending, V (n, p), with p = min(m, n).
    """
    u, s, vh = torch.linalg.svd(matrix, full_matrices=False)  # (m, p), (p,), (p, n)
    return u, s, vh.mT


@dataclass(frozen=True)
class DeltaSVD:
    """A thin SVD ΔW = U diag(σ) Vᵀ in the stored orientation of the weight.

    Attributes:
        u: Left singular vectors, shape (m, k), columns in descending σ order.
        s: Singular values, shape (k,), descending, non-negative.
        v: Right singular vectors, shape (n, k).
        kind: The delta's kind (a key of `maths.deltas.FORMS`).
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


def delta_svd(delta: Delta) -> DeltaSVD:
    """Thin SVD of a delta in its stored orientation, by the factor core when it is low-rank."""
    if delta.left is not None and delta.right is not None:
        return DeltaSVD(*factored_svd(delta.left, delta.right, delta.scale), delta.kind)
    if delta.kron is not None:
        return DeltaSVD(*kronecker_svd(*delta.kron, delta.scale), delta.kind)
    return DeltaSVD(*weight_svd(delta.dense()), delta.kind)


def activation_weighted_singular_values(delta: torch.Tensor, second_moment: torch.Tensor) -> torch.Tensor:
    """σ(ΔW Σ_x^{1/2}): the spectrum of ΔW as the layer's inputs use it.

    Σ_x = E[x xᵀ] is the second moment of the layer's inputs (`deltarank.evaluation.activations`), so
    Σ_i σ_i² = ‖ΔW Σ_x^{1/2}‖_F² = E‖ΔW x‖²: each σ_i² is the output change one direction makes on the inputs
    the layer sees, and a direction of ΔW along inputs that never occur counts for nothing. Σ_x^{1/2} is the
    symmetric square root (eigenvalues below 0 from rounding clamped to 0), in float64.

    Args:
        delta: ΔW in the (out, in) orientation of an nn.Linear weight, shape (m, n).
        second_moment: Σ_x, shape (n, n), symmetric positive semi-definite.

    Returns:
        (min(m, n),) descending, float64.
    """
    values, vectors = torch.linalg.eigh(second_moment.to(torch.float64))  # (n,), (n, n)
    root = (vectors * values.clamp(min=0).sqrt()) @ vectors.mT  # Σ_x^{1/2}, (n, n)
    return singular_values(delta.to(torch.float64) @ root, "svd")
