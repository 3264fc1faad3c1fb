"""NumPy passes of the loader thread: exact widening of stored dtypes and the NaN/Inf check."""

from __future__ import annotations

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
    # 10⁶ equal float32 squares: a float32 running sum would drift by ~1e-3; float64 keeps float32 accuracy.
    values = torch.full((1000, 1000), 0.1, dtype=torch.float32)
    expected = 1000 * float(torch.tensor(0.1, dtype=torch.float32))  # √(10⁶·x²) = 1000·x
    assert frobenius_norm(values.numpy()) == pytest.approx(expected, rel=1e-7)
