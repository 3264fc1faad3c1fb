"""Storage-rounding noise: the singular value that rounding alone would produce in an observed ΔW.

A weight stored with p explicit mantissa bits sits on a grid of spacing ulp(w) = 2^(e − 1 − p) for
|w| = m·2^e, m ∈ [½, 1). Round-to-nearest leaves an error uniform on ±ulp/2: variance ulp²/12. With per-entry
variances v_ij, the largest singular value of the m × n noise matrix is about
    max_i √(Σ_j v_ij) + max_j √(Σ_i v_ij),
which is the Marchenko–Pastur edge √v(√m + √n) when v is uniform. When v is strongly uneven, a Monte-Carlo
null (the top singular value of a few synthetic rounding-noise matrices) is used instead.
"""

from __future__ import annotations

import math

import torch

# Explicit mantissa bits of each floating storage dtype (safetensors and GGUF labels).
MANTISSA_BITS: dict[str, int] = {"F64": 52, "F32": 23, "F16": 10, "BF16": 7, "F8_E4M3": 3, "F8_E5M2": 2}
# Smallest normal exponent e_min (2^e_min is the smallest normal number): below it the grid spacing stays at
# 2^(e_min − bits) (subnormals), where the frexp formula alone would shrink it further.
MIN_NORMAL_EXPONENT: dict[str, int] = {
    "F64": -1022,
    "F32": -126,
    "F16": -14,
    "BF16": -126,
    "F8_E4M3": -6,
    "F8_E5M2": -14,
}
# Safety factor on the predicted edge (finite-size Tracy–Widom fluctuations are far smaller).
NOISE_EDGE_MARGIN = 1.1
# Row/column noise norms more uneven than this (max / mean) switch to the Monte-Carlo null.
UNEVEN_RATIO = 1.5
NOISE_MC_DRAWS = 3
NOISE_MC_SEED = 0
# Above this size the null's top σ comes from a randomised low-rank SVD (error far below the margin).
EXACT_MC_SIZE = 512
MC_LOWRANK_Q = 8
MC_LOWRANK_ITERS = 6


def mantissa_bits(dtype: str) -> int | None:
    """Explicit mantissa bits of a stored dtype label; None for quantized/integer types (not modelled)."""
    return MANTISSA_BITS.get(dtype.upper())


def rounding_variance(
    stored: torch.Tensor, bits: int, min_normal_exponent: int | None = None
) -> torch.Tensor:
    """Per-entry variance ulp(w)²/12 of round-to-nearest with `bits` mantissa bits (0 for exact zeros).

    ulp(w) = 2^(e − 1 − bits) for |w| = m·2^e, m ∈ [½, 1), but never below the subnormal spacing
    2^(e_min − bits) when the dtype's smallest normal exponent e_min is given.

    Shapes: stored (m, n) -> (m, n) float64.
    """
    values = stored.to(torch.float64)
    _, exponent = torch.frexp(values)
    if min_normal_exponent is not None:
        exponent = exponent.clamp_min(min_normal_exponent + 1)  # frexp exponent of 2^e_min is e_min + 1
    ulp = torch.ldexp(torch.ones_like(values), exponent - 1 - bits)
    return torch.where(values == 0, torch.zeros_like(values), ulp**2 / 12.0)


def noise_variance(tuned: torch.Tensor, tuned_dtype: str) -> torch.Tensor | None:
    """Per-entry storage-noise variance of ΔW = tuned − base, or None when the dtype is not modelled.

    Only the tuned checkpoint's rounding counts: training starts from the stored base values, so they are the
    exact reference point, and the noise is what storing W_base + ΔW in the tuned dtype rounds away. (If both
    checkpoints are rounded copies of higher-precision originals, the true noise is up to √2 larger.)
    """
    bits = mantissa_bits(tuned_dtype)
    if bits is None:
        return None
    return rounding_variance(tuned, bits, MIN_NORMAL_EXPONENT.get(tuned_dtype.upper()))


def storage_noise_edge(tuned: torch.Tensor, tuned_dtype: str, floor: float) -> float:
    """The noise edge of a tuned tensor's storage rounding, computed only when it can matter.

    A cheap upper bound comes first: every entry's variance is at most ulp(max|w|)²/12, so the edge is at most
    margin·√v_max·(√m + √n). When that bound is already below `floor` (the numerical-rank cut-off, which the
    noise-floor rank never goes under) the bound is returned and the per-entry pass is skipped: the
    noise-floor rank is the same either way. Returns 0.0 for dtypes that are not modelled.
    """
    bits = mantissa_bits(tuned_dtype)
    if bits is None or tuned.numel() == 0:
        return 0.0
    min_exponent = MIN_NORMAL_EXPONENT.get(tuned_dtype.upper())
    largest = float(tuned.abs().max())
    _, exponent = math.frexp(largest)
    if min_exponent is not None:
        exponent = max(exponent, min_exponent + 1)  # subnormal spacing, as in rounding_variance
    ulp_max = math.ldexp(1.0, exponent - 1 - bits)
    rows, cols = tuned.shape[-2], tuned.shape[-1]
    bound = NOISE_EDGE_MARGIN * ulp_max / math.sqrt(12.0) * (math.sqrt(rows) + math.sqrt(cols))
    if bound <= floor:
        return bound
    return noise_edge(rounding_variance(tuned, bits, min_exponent), floor)


def noise_edge(variance: torch.Tensor, floor: float = 0.0) -> float:
    """Largest singular value expected from noise with these per-entry variances (with margin).

    When the variances are uneven, the analytic max-row + max-column estimate bounds the Monte-Carlo null from
    above; if that bound is already under `floor` the (costly) null is skipped, as it cannot change a count of
    singular values above max(edge, floor).
    """
    row_norms = variance.sum(dim=1).sqrt()  # (m,)
    col_norms = variance.sum(dim=0).sqrt()  # (n,)
    if row_norms.mean() == 0:
        return 0.0
    uneven = max(
        float(row_norms.max() / row_norms.mean()), float(col_norms.max() / col_norms.clamp_min(0).mean())
    )
    analytic = NOISE_EDGE_MARGIN * float(row_norms.max() + col_norms.max())
    if uneven <= UNEVEN_RATIO or analytic <= floor:
        return analytic
    return NOISE_EDGE_MARGIN * monte_carlo_edge(variance)


def monte_carlo_edge(variance: torch.Tensor, draws: int = NOISE_MC_DRAWS) -> float:
    """Top singular value of synthetic rounding noise (uniform, per-entry variance v), the max over draws."""
    generator = torch.Generator().manual_seed(NOISE_MC_SEED)
    half_width = (3.0 * variance).sqrt().to(torch.float32)  # uniform on ±h has variance h²/3
    tops = []
    for _ in range(draws):
        uniform = torch.rand(variance.shape, generator=generator, dtype=torch.float32)
        noise = (2.0 * uniform - 1.0) * half_width
        if min(noise.shape) > EXACT_MC_SIZE:
            _, top, _ = torch.svd_lowrank(noise, q=MC_LOWRANK_Q, niter=MC_LOWRANK_ITERS)
            tops.append(float(top[0]))
        else:
            tops.append(float(torch.linalg.matrix_norm(noise, ord=2)))
    return max(tops)
