"""Rank measures against values computed by hand from their definitions (shared science notes)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deltarank.analysis.maths.ranks import (
    all_ranks,
    count_above,
    energy_rank,
    entropy_rank,
    numerical_threshold,
    participation_ratio,
    stable_rank,
    threshold_key,
)

RTOL = 1e-12
FLOAT32_EPS = float(np.finfo(np.float32).eps)
# σ = 4, 3, 2, 1: energies 16, 9, 4, 1 (total 30), cumulative 16, 25, 29, 30.
SIGMA = [4.0, 3.0, 2.0, 1.0]


@pytest.mark.parametrize(
    ("tau", "expected"),
    [
        (0.5, 1),  # 15 <= 16
        (16 / 30, 1),  # exactly the first energy: still k = 1
        (0.6, 2),  # 18 > 16, <= 25
        (0.9, 3),  # 27 > 25, <= 29
        (29 / 30, 3),  # exactly 29
        (0.99, 4),  # 29.7 > 29
        (1.0, 4),
    ],
)
def test_energy_rank_on_4_3_2_1(tau: float, expected: int) -> None:
    assert energy_rank(SIGMA, tau) == expected


def test_entropy_rank_on_4_3_2_1() -> None:
    # p = σ / Σσ = 0.4, 0.3, 0.2, 0.1;  exp(−Σ p log p) = 3.5961...
    p = [0.4, 0.3, 0.2, 0.1]
    expected = math.exp(-sum(x * math.log(x) for x in p))
    assert expected == pytest.approx(3.596115, abs=1e-6)
    assert entropy_rank(SIGMA) == pytest.approx(expected, rel=RTOL)


def test_stable_rank_on_4_3_2_1() -> None:
    assert stable_rank(SIGMA) == pytest.approx(30 / 16, rel=RTOL)  # 1.875


def test_participation_ratio_on_4_3_2_1() -> None:
    # (Σσ²)² / Σσ⁴ = 30² / (256 + 81 + 16 + 1) = 900 / 354
    assert participation_ratio(SIGMA) == pytest.approx(900 / 354, rel=RTOL)


def test_numerical_rank_counts_above_sigma1_n_eps() -> None:
    sigma = [4.0, 3.0, 2.0, 1.0, 1e-6, 1e-9, 0.0]
    edge = numerical_threshold(sigma, n=7, eps=FLOAT32_EPS)
    assert edge == pytest.approx(4.0 * 7 * FLOAT32_EPS, rel=RTOL)  # 3.34e-6: 1e-6 falls below
    assert count_above(sigma, edge) == 4


def test_zero_spectrum_has_every_rank_zero() -> None:
    zero = np.zeros(8)
    ranks = all_ranks(zero, (0.5, 0.9), numerical_threshold(zero, 8, FLOAT32_EPS), noise_edge=0.0)
    assert ranks == {
        "energy_50": 0,
        "energy_90": 0,
        "entropy": 0.0,
        "stable": 0.0,
        "participation": 0.0,
        "numerical": 0,
        "noise_floor": 0,
    }


def test_equal_spectrum_ranks_equal_its_size() -> None:
    # k equal σ: entropy, stable and participation are all exactly k; r_0.9 = ceil(0.9 k).
    sigma = np.ones(10) * 0.25
    assert entropy_rank(sigma) == pytest.approx(10.0, rel=RTOL)
    assert stable_rank(sigma) == pytest.approx(10.0, rel=RTOL)
    assert participation_ratio(sigma) == pytest.approx(10.0, rel=RTOL)
    assert energy_rank(sigma, 0.9) == 9


def test_all_ranks_keys_and_noise_floor_takes_the_larger_edge() -> None:
    sigma = [4.0, 3.0, 2.0, 1.0]
    ranks = all_ranks(sigma, (0.5, 0.9, 0.99), numerical_edge=0.5, noise_edge=2.5)
    assert list(ranks) == [
        "energy_50",
        "energy_90",
        "energy_99",
        "entropy",
        "stable",
        "participation",
        "numerical",
        "noise_floor",
    ]
    assert ranks["numerical"] == 4  # all above 0.5
    assert ranks["noise_floor"] == 2  # 4 and 3 above 2.5
    assert all_ranks(sigma, (0.9,), numerical_edge=3.5, noise_edge=0.0)["noise_floor"] == 1


def test_energy_rank_at_tau_one_never_exceeds_the_spectrum_length() -> None:
    # σ₁² = 1 plus 100 000 values of σ² = 1e-16: the sequential cumulative sum stays at 1.0 (each 1e-16 is
    # below half an ulp of 1) while the pairwise total is 1 + 1e-11, so an unclipped search returns n + 1.
    sigma = np.concatenate([[1.0], np.full(100_000, 1e-8)])
    assert energy_rank(sigma, 1.0) == sigma.size


@pytest.mark.parametrize(
    ("tau", "key"),
    [
        (0.5, "energy_50"),
        (0.9, "energy_90"),
        (0.99, "energy_99"),
        (0.995, "energy_99.5"),
        (1.0, "energy_100"),
    ],
)
def test_threshold_key(tau: float, key: str) -> None:
    assert threshold_key(tau) == key


spectra = st.lists(st.floats(min_value=1e-6, max_value=1e3), min_size=1, max_size=40).map(
    lambda xs: np.sort(np.asarray(xs))[::-1]
)


@settings(max_examples=60, deadline=None)
@given(spectra)
def test_rank_measure_inequalities(sigma: np.ndarray) -> None:
    """1 ≤ stable ≤ participation ≤ n, 1 ≤ entropy ≤ n, r_τ monotone in τ and at most n."""
    n = sigma.size
    slack = 1e-9
    assert 1 - slack <= stable_rank(sigma) <= participation_ratio(sigma) * (1 + slack)
    assert participation_ratio(sigma) <= n * (1 + slack)
    assert 1 - slack <= entropy_rank(sigma) <= n * (1 + slack)
    taus = [0.1, 0.5, 0.9, 0.99, 1.0]
    ks = [energy_rank(sigma, t) for t in taus]
    assert ks == sorted(ks)
    assert ks[0] >= 1 and ks[-1] <= n
