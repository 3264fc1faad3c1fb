"""Storage-rounding noise: per-entry variance ulp²/12 and the predicted top singular value of the noise."""

from __future__ import annotations

import math

import pytest
import torch

from deltarank.analysis.maths import noise
from deltarank.analysis.maths.noise import (
    NOISE_EDGE_MARGIN,
    mantissa_bits,
    monte_carlo_edge,
    noise_edge,
    noise_variance,
    rounding_variance,
    storage_noise_edge,
)

SHAPE = (64, 128)
# Observed top σ of real rounding noise over the predicted edge: below 1 (the edge bounds it) and not far below
# (the edge is tight enough that a planted direction just above the noise is still counted).
MIN_TIGHTNESS = 0.6
LOWRANK_RTOL = 0.05


def _gaussian(shape: tuple[int, int], seed: int, std: float = 0.02) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * std


@pytest.mark.parametrize(("dtype", "label"), [(torch.bfloat16, "BF16"), (torch.float16, "F16")])
def test_noise_variance_is_grid_spacing_squared_over_12(dtype: torch.dtype, label: str) -> None:
    # 256 values of std 0.02; in fp16 one of them (2.66e-5) is subnormal, where the spacing stops shrinking.
    stored = _gaussian((16, 16), seed=1).to(dtype)
    magnitude = stored.abs()
    spacing = (
        torch.nextafter(magnitude, torch.full_like(magnitude, math.inf)) - magnitude
    )  # one ulp above |w|
    variance = noise_variance(stored, label)
    assert variance is not None
    assert torch.equal(variance, spacing.double() ** 2 / 12)


def test_fp16_subnormals_keep_the_subnormal_spacing() -> None:
    # Below 2^-14 fp16 is subnormal with spacing 2^-24, whatever the value's own exponent.
    stored = torch.tensor([[2.0**-14, 2.0**-17, 2.0**-24]], dtype=torch.float16)
    variance = noise_variance(stored, "F16")
    assert variance is not None
    assert variance.tolist() == [[2.0**-48 / 12] * 3]


def test_rounding_variance_of_exact_zero_is_zero() -> None:
    stored = torch.tensor([[0.0, 1.0], [-0.0, 0.5]], dtype=torch.bfloat16)
    variance = rounding_variance(stored, 7)
    # 1.0 sits on the grid of [1, 2): ulp 2^-7; 0.5 on [0.5, 1): ulp 2^-8.
    assert variance.tolist() == [[0.0, 2.0**-14 / 12], [0.0, 2.0**-16 / 12]]


@pytest.mark.parametrize(
    ("label", "bits"),
    [
        ("F32", 23),
        ("BF16", 7),
        ("bf16", 7),
        ("F16", 10),
        ("F64", 52),
        ("F8_E4M3", 3),
        ("Q4_1", None),
        ("I8", None),
    ],
)
def test_mantissa_bits(label: str, bits: int | None) -> None:
    assert mantissa_bits(label) == bits


def test_noise_variance_is_none_for_quantized_storage() -> None:
    assert noise_variance(torch.ones(2, 2), "Q4_1") is None


def test_uniform_variance_edge_is_marchenko_pastur() -> None:
    v = 1e-6
    m, n = SHAPE
    expected = NOISE_EDGE_MARGIN * math.sqrt(v) * (math.sqrt(m) + math.sqrt(n))
    assert noise_edge(torch.full(SHAPE, v, dtype=torch.float64)) == pytest.approx(expected, rel=1e-12)


def test_zero_variance_edge_is_zero() -> None:
    assert noise_edge(torch.zeros(SHAPE, dtype=torch.float64)) == 0.0


@pytest.mark.parametrize("dtype_label", ["BF16", "F16"])
def test_edge_bounds_real_rounding_noise(dtype_label: str) -> None:
    dtype = {"BF16": torch.bfloat16, "F16": torch.float16}[dtype_label]
    weights = _gaussian(SHAPE, seed=2)
    stored = weights.to(dtype)
    observed = float(torch.linalg.matrix_norm(stored.float() - weights, ord=2))
    edge = noise_edge(noise_variance(stored, dtype_label))
    assert MIN_TIGHTNESS * edge <= observed <= edge, (observed, edge)


def test_uneven_variance_uses_monte_carlo_and_still_bounds_real_noise() -> None:
    # Rows scaled by 1, 2, 4, ..., 32: row noise norms vary 32-fold, far above UNEVEN_RATIO.
    row_scale = 2.0 ** (torch.arange(SHAPE[0]) % 6).float().reshape(-1, 1)
    weights = _gaussian(SHAPE, seed=3) * row_scale
    stored = weights.to(torch.bfloat16)
    variance = noise_variance(stored, "BF16")
    row_norms = variance.sum(dim=1).sqrt()
    assert float(row_norms.max() / row_norms.mean()) > noise.UNEVEN_RATIO
    edge = noise_edge(variance)
    assert edge == pytest.approx(NOISE_EDGE_MARGIN * monte_carlo_edge(variance), rel=1e-12)
    observed = float(torch.linalg.matrix_norm(stored.float() - weights, ord=2))
    assert MIN_TIGHTNESS * edge <= observed <= edge, (observed, edge)
    # The row+column bound is valid but loose here; the Monte-Carlo null is tighter.
    assert edge < NOISE_EDGE_MARGIN * float(row_norms.max() + variance.sum(dim=0).sqrt().max())


def test_monte_carlo_edge_is_seeded_and_lowrank_branch_agrees(monkeypatch: pytest.MonkeyPatch) -> None:
    variance = rounding_variance(_gaussian(SHAPE, seed=4).to(torch.bfloat16), 7)
    exact = monte_carlo_edge(variance)
    assert monte_carlo_edge(variance) == exact  # same seed, same draws
    monkeypatch.setattr(noise, "EXACT_MC_SIZE", 16)  # force torch.svd_lowrank on this 64 × 128 matrix
    assert monte_carlo_edge(variance) == pytest.approx(exact, rel=LOWRANK_RTOL)


def test_storage_noise_edge_of_subnormal_fp16_weights() -> None:
    # Every entry ±2^-17 (subnormal in fp16): spacing 2^-24, uniform variance 2^-48/12, so the MP edge.
    m, n = SHAPE
    signs = torch.where(_gaussian(SHAPE, seed=5) > 0, 1.0, -1.0)
    stored = (signs * 2.0**-17).to(torch.float16)
    expected = NOISE_EDGE_MARGIN * math.sqrt(2.0**-48 / 12) * (math.sqrt(m) + math.sqrt(n))
    assert storage_noise_edge(stored, "F16", floor=0.0) == pytest.approx(expected, rel=1e-12)


def test_storage_noise_edge_returns_the_cheap_bound_under_the_floor() -> None:
    # Largest entry 0.75 ∈ [0.5, 1): ulp 2^-8 bounds every entry's spacing, hence this bound on the edge.
    m, n = SHAPE
    weights = _gaussian(SHAPE, seed=6, std=0.1).clamp(-0.7, 0.7)
    weights[3, 5] = 0.75
    stored = weights.to(torch.bfloat16)
    bound = NOISE_EDGE_MARGIN * 2.0**-8 / math.sqrt(12) * (math.sqrt(m) + math.sqrt(n))
    assert storage_noise_edge(stored, "BF16", floor=1.0) == pytest.approx(bound, rel=1e-12)
    full = storage_noise_edge(stored, "BF16", floor=0.0)
    # The per-entry pass sums relative variances in float32: agreement to float32 rounding.
    assert full == pytest.approx(noise_edge(noise_variance(stored, "BF16")), rel=1e-6)
    assert full < bound
    assert storage_noise_edge(stored, "Q4_1", floor=0.0) == 0.0
