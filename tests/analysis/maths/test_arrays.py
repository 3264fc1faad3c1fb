"""NumPy passes of the loader thread (`maths/arrays.py`): exact widening of stored dtypes, the NaN/Inf check
and the float64-accumulated Frobenius norm."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from deltarank.analysis.maths.arrays import all_finite, frobenius_norm, host_array

STORED = [torch.float16, torch.bfloat16, torch.float32, torch.float64]


@pytest.mark.parametrize("stored", STORED)
@pytest.mark.parametrize("target", [torch.float32, torch.float64])
def test_host_array_widens_exactly(stored: torch.dtype, target: torch.dtype) -> None:
    values = (torch.randn(37, 23, generator=torch.Generator().manual_seed(0)) * 3.0).to(stored)
    values[0, 0] = 0.0
    values[1, 1] = -(2.0**-20)  # subnormal in float16
    array = host_array(values, target)
    if stored == torch.float64 and target == torch.float32:
        expected = values.to(torch.float32)
    else:
        expected = values.to(target)
    assert torch.equal(torch.from_numpy(array), expected)


@pytest.mark.parametrize("stored", STORED)
def test_all_finite_finds_nan_and_inf_but_accepts_the_largest_finite_value(stored: torch.dtype) -> None:
    values = torch.randn(40, 30, generator=torch.Generator().manual_seed(1)).to(stored)
    assert all_finite(values)
    assert all_finite(values.T)  # strided view
    assert all_finite(torch.full((8, 8), torch.finfo(stored).max, dtype=stored))  # its float64 sum is finite
    for bad in (float("nan"), float("inf"), float("-inf")):
        broken = values.clone()
        broken[17, 3] = bad
        assert not all_finite(broken)


def test_frobenius_norm_sums_in_float64() -> None:
    # Mixed magnitudes k·2^e (k < 2¹², |e| ≤ 10): every float32 square is exact, so the only error left is the
    # accumulation's. Summed in float64 the norm agrees with math.fsum to ~1e-16; a float32 running (or
    # pairwise) sum of 10⁶ such squares is off by ~2e-8, far outside the tolerance.
    rng = np.random.default_rng(0)
    k = rng.integers(0, 4096, size=(1000, 1000))
    values = (k * np.ldexp(1.0, rng.integers(-10, 11, size=k.shape))).astype(np.float32)
    squares = values.astype(np.float64) ** 2
    assert np.array_equal(squares, np.square(values).astype(np.float64))  # the float32 squares are exact
    expected = math.sqrt(math.fsum(squares.ravel().tolist()))
    assert frobenius_norm(values) == pytest.approx(expected, rel=1e-12, abs=0)
