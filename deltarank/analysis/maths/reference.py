"""What a Gaussian matrix of the same shape gives: the random-matrix reference beside every rank.

The singular values of an m × n matrix with i.i.d. entries follow, for large sizes, the Marchenko–Pastur
law: with y = min/max ≤ 1, the squared singular values (scaled by 1/max) have density
f(x) = √((b − x)(x − a)) / (2π y x) on [a, b] = [(1 − √y)², (1 + √y)²]. We place the n = min(m, n)
singular values at the law's quantiles ("classical locations"), which is deterministic, costs no
decomposition, and matches a sampled Gaussian matrix to within a fraction of a percent (tested).
"""

from __future__ import annotations

import functools

import numpy as np

from deltarank.analysis.maths.ranks import FloatArray, energy_rank

# Grid points for the numerical CDF of the Marchenko–Pastur law.
MP_GRID = 20_001


@functools.lru_cache(maxsize=256)
def gaussian_singular_values(rows: int, cols: int) -> FloatArray:
    """Expected singular values (descending, scaled so σ = √x with x the MP variable) of a rows × cols
    Gaussian matrix, placed at the Marchenko–Pastur quantiles (i − ½)/n."""
    n, big = min(rows, cols), max(rows, cols)
    if n == 0:
        return np.zeros(0)
    y = n / big
    lo, hi = (1 - np.sqrt(y)), (1 + np.sqrt(y))
    # Integrate in u = σ = √x, where the density is finite even at y = 1: g(u) = 2u·f(u²).
    u = np.linspace(lo, hi, MP_GRID)
    mid = 0.5 * (u[1:] + u[:-1])
    density = np.sqrt(np.clip((hi**2 - mid**2) * (mid**2 - lo**2), 0, None)) / (np.pi * y * mid)
    cdf = np.concatenate([[0.0], np.cumsum(density * np.diff(u))])
    cdf /= cdf[-1]
    quantiles = 1.0 - (np.arange(n) + 0.5) / n  # descending σ
    sigma = np.interp(quantiles, cdf, u)
    sigma.setflags(write=False)
    return sigma


@functools.lru_cache(maxsize=1024)
def random_energy_rank(rows: int, cols: int, tau: float = 0.9) -> int:
    """energy rank r_τ of a Gaussian matrix of this shape (square: ≈ 0.51·n at τ = 0.9)."""
    return energy_rank(gaussian_singular_values(rows, cols), tau)
