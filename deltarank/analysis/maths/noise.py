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
from dataclasses import dataclass, replace

import numpy as np
import torch

from deltarank.analysis.maths.arrays import LARGE_ENTRIES, host_array, row_blocks
from deltarank.analysis.maths.randomized import seeded_top_sigma
from deltarank.io.dtypes import MIN_NORMAL_EXPONENT, mantissa_bits

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


def ulp_exponents(values: np.ndarray, bits: int, min_normal_exponent: int | None = None) -> np.ndarray:
    """log₂ ulp(w) of each stored value w, for a dtype with `bits` explicit mantissa bits: e − 1 − bits for
    |w| = m·2^e, m ∈ [½, 1), never below the subnormal spacing's e_min − bits when the dtype's smallest normal
    exponent e_min is given (exact zeros get that spacing too). `rounding_variance` in NumPy, as integers.

    Shapes: values (m, n) float32/float64 -> (m, n) int32.
    """
    _, exponent = np.frexp(values)
    if min_normal_exponent is not None:
        np.maximum(exponent, min_normal_exponent + 1, out=exponent)  # frexp exponent of 2^e_min is e_min + 1
        # frexp gives 0 for 0; the grid there is the subnormal one
        exponent[values == 0] = min_normal_exponent + 1
    exponent -= 1 + bits
    return exponent


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


@dataclass(frozen=True)
class StorageNoise:
    """The noise-edge figures of one stored tensor, computed before its σ are known (on the loader thread).

    Attributes:
        bound: Cheap upper bound on the edge, margin·√v_max·(√m + √n); 0.0 for dtypes that are not modelled.
        analytic: margin·(max row + max column noise norm), or None when the per-entry pass was skipped
            because `bound` was already under a known lower bound of the numerical floor.
        relative: Per-entry variances relative to v_max (float32), kept only when they are uneven enough to
            need the Monte-Carlo null.
        scale: √v_max, the unit of `relative`.
    """

    bound: float
    analytic: float | None = None
    relative: torch.Tensor | None = None
    scale: float = 0.0

    def edge(self, floor: float) -> float:
        """The noise edge given the numerical floor `floor` (see `storage_noise_edge`)."""
        if self.analytic is None or self.bound <= floor:
            return self.bound
        if self.relative is None or self.analytic <= floor:
            return self.analytic
        return self.scale * NOISE_EDGE_MARGIN * monte_carlo_edge(self.relative)


def storage_noise(tuned: torch.Tensor, tuned_dtype: str, floor_hint: float = 0.0) -> StorageNoise:
    """The `StorageNoise` of a stored tensor (CPU), in NumPy.

    A cheap upper bound comes first: every entry's variance is at most ulp(max|w|)²/12, so the edge is at most
    margin·√v_max·(√m + √n). The per-entry pass is skipped when that bound is under `floor_hint`, a lower
    bound of the numerical floor known before the σ are (the noise-floor rank never counts below that floor,
    so it is the same either way). The pass works on variances relative to v_max, in float32: the edge scales
    with their square root, and entries 2⁶⁴ below the largest, which underflow to 0, add nothing measurable.
    """
    bits = mantissa_bits(tuned_dtype)
    if bits is None or tuned.numel() == 0:
        return StorageNoise(0.0)
    min_exponent = MIN_NORMAL_EXPONENT.get(tuned_dtype.upper())
    width = torch.float64 if tuned.dtype == torch.float64 else torch.float32
    rows, cols = tuned.shape[-2], tuned.shape[-1]
    blocks = row_blocks(rows, cols) if tuned.numel() > LARGE_ENTRIES else [slice(0, rows)]
    largest = 0.0
    for block in blocks:  # max|w| without an |w| temporary
        values = host_array(tuned[block], width)
        largest = max(largest, float(values.max()), -float(values.min()))
    _, exponent = math.frexp(largest)
    if min_exponent is not None:
        exponent = max(exponent, min_exponent + 1)  # subnormal spacing, as in rounding_variance
    scale = math.ldexp(1.0, exponent - 1 - bits) / math.sqrt(12.0)  # √v_max
    bound = NOISE_EDGE_MARGIN * scale * (math.sqrt(rows) + math.sqrt(cols))
    if bound <= floor_hint:
        return StorageNoise(bound)

    def relative(block: slice) -> np.ndarray:
        """Per-entry variances of the rows `block`, relative to v_max: 4^(e − e_max), 0 for exact zeros."""
        values = host_array(tuned[block], width)
        entry_exponent = ulp_exponents(values, bits, min_exponent)
        out = np.exp2(((entry_exponent - (exponent - 1 - bits)) * 2).astype(np.float32))
        out[values == 0] = 0.0
        return out

    if len(blocks) == 1:
        return _from_variance(relative(blocks[0]), scale, bound)
    # A large matrix: row and column sums block by block; the whole array only if the Monte-Carlo null needs it.
    row_sums = np.empty(rows)
    col_sums = np.zeros(cols)
    for block in blocks:
        part = relative(block)
        row_sums[block] = part.sum(axis=1, dtype=np.float64)
        col_sums += part.sum(axis=0, dtype=np.float64)
    noise = _from_norms(np.sqrt(row_sums), np.sqrt(col_sums), scale, bound)
    if noise.analytic is None or not _uneven(np.sqrt(row_sums), np.sqrt(col_sums)):
        return noise
    return replace(noise, relative=torch.from_numpy(np.concatenate([relative(b) for b in blocks])))


def _from_variance(variance: np.ndarray, scale: float, bound: float) -> StorageNoise:
    """`StorageNoise` from per-entry variances in units of scale² (the row/column pass shared by all callers).

    Shapes: variance (m, n); the array is kept (as a tensor) only when uneven enough for the Monte-Carlo null.
    """
    row_norms = np.sqrt(variance.sum(axis=1, dtype=np.float64))  # (m,)
    col_norms = np.sqrt(variance.sum(axis=0, dtype=np.float64))  # (n,)
    noise = _from_norms(row_norms, col_norms, scale, bound)
    if noise.analytic is None or not _uneven(row_norms, col_norms):
        return noise
    return replace(noise, relative=torch.from_numpy(variance))


def _from_norms(row_norms: np.ndarray, col_norms: np.ndarray, scale: float, bound: float) -> StorageNoise:
    """The analytic edge margin·scale·(max row + max column noise norm); 0 for an all-zero variance."""
    if row_norms.mean() == 0:
        return StorageNoise(bound, 0.0)
    return StorageNoise(
        bound, NOISE_EDGE_MARGIN * scale * float(row_norms.max() + col_norms.max()), None, scale
    )


def _uneven(row_norms: np.ndarray, col_norms: np.ndarray) -> bool:
    """Row or column noise norms uneven enough (max / mean) for the Monte-Carlo null."""
    if row_norms.mean() == 0:
        return False
    return max(row_norms.max() / row_norms.mean(), col_norms.max() / col_norms.mean()) > UNEVEN_RATIO


def storage_noise_edge(tuned: torch.Tensor, tuned_dtype: str, floor: float) -> float:
    """The noise edge of a tuned tensor's storage rounding, with the numerical floor `floor` known.

    Returns the cheap bound when it is under `floor`, else the per-entry estimate (Monte-Carlo null when the
    variances are uneven); 0.0 for dtypes that are not modelled.
    """
    return storage_noise(tuned.cpu(), tuned_dtype, floor).edge(floor)


def noise_edge(variance: torch.Tensor, floor: float = 0.0) -> float:
    """Largest singular value expected from noise with these per-entry variances (with margin).

    When the variances are uneven, the analytic max-row + max-column estimate bounds the Monte-Carlo null from
    above; if that bound is already under `floor` the (costly) null is skipped, as it cannot change a count of
    singular values above max(edge, floor).
    """
    return _from_variance(variance.detach().cpu().numpy(), 1.0, math.inf).edge(floor)


def monte_carlo_edge(variance: torch.Tensor, draws: int = NOISE_MC_DRAWS) -> float:
    """Top singular value of synthetic rounding noise (uniform, per-entry variance v), the max over draws."""
    generator = torch.Generator().manual_seed(NOISE_MC_SEED)
    half_width = (3.0 * variance).sqrt().to(torch.float32)  # uniform on ±h has variance h²/3
    tops = []
    for _ in range(draws):
        uniform = torch.rand(variance.shape, generator=generator, dtype=torch.float32)
        noise = (2.0 * uniform - 1.0) * half_width
        if min(noise.shape) > EXACT_MC_SIZE:
            tops.append(float(seeded_top_sigma(noise, MC_LOWRANK_Q, MC_LOWRANK_ITERS)[0]))
        else:
            tops.append(float(torch.linalg.matrix_norm(noise, ord=2)))
    return max(tops)
