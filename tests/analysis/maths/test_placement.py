"""Placement of ΔW among W₀'s singular directions on planted float64 matrices: shares, chance, principal angles
and the relative σ change each equal their closed form."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from deltarank.analysis.maths.placement import (
    chance_share,
    direction_energies,
    principal_cosines,
    relative_sigma_change,
    squared_norm,
    subspace_shares,
)
from deltarank.analysis.tools.placement import weight_placement
from tests.analysis.subspace_models import orthogonal, planted_in_base

EXACT = 1e-6  # the brief's "exactly": float64 arithmetic lands within ~1e-14
SHAPES = [(48, 48), (40, 24), (24, 40)]  # square, tall, wide


def base_weight(shape: tuple[int, int], seed: int = 0) -> torch.Tensor:
    """W₀ = U diag(σ) Vᵀ with well separated σ (so every top-k subspace is well defined), float64."""
    m, n = shape
    p = min(shape)
    u, v = orthogonal(m, seed)[:, :p], orthogonal(n, seed + 1)[:, :p]
    sigma = torch.linspace(20.0, 1.0, p, dtype=torch.float64)
    return (u * sigma) @ v.T


def shares(base: torch.Tensor, delta: torch.Tensor, k: int) -> tuple[float | None, ...]:
    """(left top, left bottom, right top, right bottom) shares of ΔW in W₀'s k directions."""
    u, _, vh = torch.linalg.svd(base, full_matrices=False)
    left, right = direction_energies(delta, u, vh.mT)
    total = squared_norm(delta)
    return (*subspace_shares(left, total, k), *subspace_shares(right, total, k))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(
    ("where", "expected"), [("top", (1.0, 0.0, 1.0, 0.0)), ("bottom", (0.0, 1.0, 0.0, 1.0))]
)
def test_planted_delta_lands_in_its_subspace(
    shape: tuple[int, int], where: str, expected: tuple[float, ...]
) -> None:
    base = base_weight(shape)
    delta = planted_in_base(base, [2.0, 2.0, 1.5, 1.5], where)  # r₀.₉ = 4
    assert shares(base, delta, 4) == pytest.approx(expected, abs=EXACT)
    # and through the whole per-matrix measurement, at the given k and at k = r₀.₉ of ΔW (here 4 as well)
    result = weight_placement(base, base + delta, delta, sizes=[4])
    assert result.energy_90 == 4 and [s.key for s in result.subspaces] == ["energy_90", "k4"]
    for entry in result.subspaces:
        got = (entry.left_top, entry.left_bottom, entry.right_top, entry.right_bottom)
        assert got == pytest.approx(expected, abs=EXACT)
        assert (entry.left_chance, entry.right_chance) == (4 / shape[0], 4 / shape[1])


def test_top_share_counts_only_the_first_k_directions() -> None:
    base = base_weight((32, 32))
    delta = planted_in_base(base, [2.0, 1.0], "top")  # energies 4 and 1 along u₁, u₂
    assert shares(base, delta, 1)[0] == pytest.approx(0.8, abs=EXACT)
    assert shares(base, delta, 1)[2] == pytest.approx(0.8, abs=EXACT)
    assert shares(base, delta, 2)[0] == pytest.approx(1.0, abs=EXACT)


def gaussian_share_std(k: int, m: int, n: int) -> float:
    """Standard deviation of the left share of an i.i.d. Gaussian (m, n) ΔW in a fixed k-dim subspace of R^m:
    ‖P G‖² ~ χ²(k·n) and ‖(I − P) G‖² ~ χ²((m − k)·n) are independent, so the share is
    Beta(k·n/2, (m − k)·n/2), of mean c = k/m and variance 2·c·(1 − c)/(m·n + 2)."""
    c = k / m
    return math.sqrt(2 * c * (1 - c) / (m * n + 2))


@pytest.mark.parametrize("shape", SHAPES)
def test_random_delta_gets_the_chance_share(shape: tuple[int, int]) -> None:
    m, n = shape
    k = 6
    base = base_weight(shape)
    generator = torch.Generator().manual_seed(7)
    draws = 200
    found = np.array(
        [shares(base, torch.randn(m, n, generator=generator, dtype=torch.float64), k) for _ in range(draws)],
        dtype=np.float64,
    )  # (draws, 4): left top, left bottom, right top, right bottom
    chance = np.array([k / m, k / m, k / n, k / n])
    std = np.array([gaussian_share_std(k, m, n)] * 2 + [gaussian_share_std(k, n, m)] * 2)
    # every single draw within 5 standard deviations (a 6e-7 chance per value under the Beta law) ...
    assert np.all(np.abs(found - chance) < 5 * std)
    # ... and the mean of 200 draws within 4 standard errors of k/d
    assert np.all(np.abs(found.mean(axis=0) - chance) < 4 * std / math.sqrt(draws))
    # the spread matches the Beta law's within 20% (200 draws: the sample std's own error is ~5%)
    assert found.std(axis=0, ddof=1) == pytest.approx(std, rel=0.2)
    assert chance_share(k, m) == k / m


def test_scaled_top_singular_values_keep_the_top_subspace() -> None:
    base = base_weight((40, 24))
    u, s, vh = torch.linalg.svd(base, full_matrices=False)
    k = 5
    delta = (u[:, :k] * (0.01 * s[:k])) @ vh[:k]  # W' = W₀ + small ΔW in the top subspace: σ_1..σ_k × 1.01
    result = weight_placement(base, base + delta, delta, sizes=[k])
    entry = result.subspaces[-1]
    assert entry.key == "k5"
    assert entry.left_cosines == pytest.approx([1.0] * k, abs=EXACT)
    assert entry.right_cosines == pytest.approx([1.0] * k, abs=EXACT)
    assert entry.left_mean_cos2 == pytest.approx(1.0, abs=EXACT)
    assert entry.left_top == pytest.approx(1.0, abs=EXACT)
    assert result.sigma_change[:k] == pytest.approx([0.01] * k, abs=1e-12)


@pytest.mark.parametrize("degrees", [10.0, 30.0, 75.0])
def test_planted_rotation_gives_its_principal_angle(degrees: float) -> None:
    """W' = U' Σ Vᵀ with u₁ turned by θ towards u_p (outside the top k): the top-k left subspaces meet at the
    angles (0, …, 0, θ); the right ones coincide."""
    base = base_weight((32, 32))
    u, s, vh = torch.linalg.svd(base, full_matrices=False)
    theta = math.radians(degrees)
    turned = u.clone()
    last = u.shape[1] - 1
    turned[:, 0] = math.cos(theta) * u[:, 0] + math.sin(theta) * u[:, last]
    turned[:, last] = -math.sin(theta) * u[:, 0] + math.cos(theta) * u[:, last]
    tuned = (turned * s) @ vh
    k = 4
    result = weight_placement(base, tuned, tuned - base, sizes=[k])
    entry = next(e for e in result.subspaces if e.key == "k4")
    expected = [1.0] * (k - 1) + [math.cos(theta)]
    assert entry.left_cosines == pytest.approx(expected, abs=EXACT)
    assert entry.right_cosines == pytest.approx([1.0] * k, abs=EXACT)
    assert entry.left_mean_cos2 == pytest.approx((k - 1 + math.cos(theta) ** 2) / k, abs=EXACT)
    assert result.sigma_change == pytest.approx([0.0] * 8, abs=1e-12)  # a rotation keeps every σ


def test_principal_cosines_of_known_planes() -> None:
    e = torch.eye(3, dtype=torch.float64)
    tilted = torch.stack([e[0], (e[1] + e[2]) / math.sqrt(2)], dim=1)  # (3, 2)
    assert principal_cosines(e[:, :2], tilted).tolist() == pytest.approx([1.0, 1 / math.sqrt(2)])


def test_scaling_sigma_one_changes_it_by_exactly_a_tenth() -> None:
    base = base_weight((24, 40))
    u, s, vh = torch.linalg.svd(base, full_matrices=False)
    delta = 0.1 * s[0] * torch.outer(u[:, 0], vh[0])  # W' = W₀ with σ₁ × 1.1
    result = weight_placement(base, base + delta, delta, sigma_top=8)
    assert result.sigma_change[0] == pytest.approx(0.1, abs=1e-12)
    assert result.sigma_change[1:] == pytest.approx([0.0] * 7, abs=1e-12)
    assert result.base_sigma[0] * 1.1 == pytest.approx(result.tuned_sigma[0], rel=1e-12)


def test_zero_delta_and_zero_sigma() -> None:
    base = base_weight((16, 16))
    zero = torch.zeros(16, 16, dtype=torch.float64)
    result = weight_placement(base, base, zero, sizes=[3])
    assert result.energy_90 == 0 and result.delta_norm == 0.0
    assert [e.key for e in result.subspaces] == ["k3"]  # no r₀.₉ to match when ΔW = 0
    entry = result.subspaces[0]
    assert entry.left_top is None and entry.right_bottom is None
    assert entry.left_cosines == pytest.approx([1.0] * 3, abs=EXACT)
    assert relative_sigma_change([2.0, 0.0], [3.0, 1.0], 8) == (0.5, None)


def test_sizes_are_clipped_to_the_width() -> None:
    base = base_weight((12, 8))
    delta = torch.randn(12, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    entry = weight_placement(base, base + delta, delta, sizes=[100]).subspaces[-1]
    assert (entry.key, entry.k) == ("k100", 8)
    assert entry.right_top == pytest.approx(1.0, abs=EXACT)  # V spans R^8: all of ΔW
    assert entry.left_chance == pytest.approx(8 / 12)
