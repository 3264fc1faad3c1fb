"""The Gaussian (Marchenko–Pastur) reference against sampled Gaussian matrices and the known ratios."""

from __future__ import annotations

import numpy as np
import pytest

from deltarank.analysis.maths.ranks import energy_rank
from deltarank.analysis.maths.reference import gaussian_singular_values, random_energy_rank

SAMPLED_RTOL = 0.02  # the bound: within 2% of a sampled Gaussian
DRAWS = 3
# Shapes: square, wide (y = 1/4), tall and uneven.
SAMPLED_SHAPES = [(256, 256), (128, 512), (300, 200)]


@pytest.mark.parametrize("shape", SAMPLED_SHAPES)
def test_random_energy_90_matches_sampled_gaussian(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(7)
    sampled = [
        energy_rank(np.linalg.svd(rng.standard_normal(shape), compute_uv=False), 0.9) for _ in range(DRAWS)
    ]
    reference = random_energy_rank(*shape, 0.9)
    assert abs(reference - np.mean(sampled)) <= SAMPLED_RTOL * reference, (reference, sampled)


@pytest.mark.parametrize("n", [256, 1024, 4096])
def test_square_gaussian_energy_90_is_051_n(n: int) -> None:
    assert random_energy_rank(n, n, 0.9) / n == pytest.approx(0.51, abs=0.01)


def test_llama_mlp_shape_energy_90_is_071_n() -> None:
    # science notes: a 4096 × 11008 Gaussian has r_0.9 ≈ 0.71 · 4096
    assert random_energy_rank(4096, 11008, 0.9) / 4096 == pytest.approx(0.71, abs=0.01)


def test_orientation_does_not_matter() -> None:
    assert random_energy_rank(64, 256, 0.9) == random_energy_rank(256, 64, 0.9)


@pytest.mark.parametrize("shape", [(100, 100), (50, 200)])
def test_gaussian_singular_values_lie_on_the_mp_support(shape: tuple[int, int]) -> None:
    n, big = min(shape), max(shape)
    sigma = gaussian_singular_values(*shape)
    lo, hi = 1 - np.sqrt(n / big), 1 + np.sqrt(n / big)
    assert sigma.shape == (n,)
    assert np.all(np.diff(sigma) <= 0)  # descending
    assert lo <= sigma.min() and sigma.max() <= hi
    # Mean of σ² is 1 for entries of variance 1/big (MP law has mean 1).
    assert np.mean(sigma**2) == pytest.approx(1.0, rel=0.01)
