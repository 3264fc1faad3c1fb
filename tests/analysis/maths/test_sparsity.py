"""Counting the entries of ΔW that did not move: exact zeros, |Δw| ≤ atol, |Δw| ≤ ulp(w)/2 of the stored base;
row blocks of a dense, low-rank or Kronecker ΔW, formed one at a time."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from deltarank.analysis.maths import deltas
from deltarank.analysis.maths.arrays import row_blocks
from deltarank.analysis.maths.deltas import Delta
from deltarank.analysis.maths.noise import ulp_exponents
from deltarank.analysis.maths.sparsity import count_unchanged


def _rows(matrix: torch.Tensor) -> list[tuple[slice, torch.Tensor]]:
    return [(block, matrix[block]) for block in row_blocks(*matrix.shape, entries=40)]  # several blocks


def test_ulp_exponents_follow_the_stored_grid() -> None:
    values = np.array([1.0, 1.5, 0.75, 2.0, 0.0, 2.0**-130, -3.0], dtype=np.float32)
    # bf16 (7 bits): ulp(1) = 2^-7, ulp(0.75) = 2^-8, ulp(2) = 2^-6; zero and subnormals 2^(-126-7)
    assert ulp_exponents(values, 7, -126).tolist() == [-7, -7, -8, -6, -133, -133, -6]
    assert ulp_exponents(values[:1], 23, -126).tolist() == [-23]  # float32: ulp(1) = 2^-23 = eps


def test_counts_of_a_planted_float32_delta() -> None:
    """Entries 0..127 move by 1e-3, 128..255 by 1e-6, the other 256 not at all (16 × 32, F32 base)."""
    base = torch.full((16, 32), 0.75)
    delta = torch.zeros(512)
    delta[:128], delta[128:256] = 1e-3, 1e-6
    delta = delta.reshape(16, 32)
    counts = count_unchanged(_rows(delta), base, "F32", 1e-5)
    assert (counts.entries, counts.unchanged, counts.within_atol, counts.within_rounding) == (
        512,
        256,
        384,
        256,
    )
    assert count_unchanged(_rows(delta), None, "F32", 1e-5).within_rounding is None  # base not read
    assert count_unchanged(_rows(delta), base, "Q4_K", 1e-5).within_rounding is None  # not a modelled float
    assert count_unchanged(_rows(delta), base, "F32", 1e-3).within_atol == 512


def test_rounding_is_measured_on_the_base_grid() -> None:
    """Base 1.0 in bf16: ulp 2^-7, so changes up to 2^-8 (inclusive) round away; in fp32 only zero does."""
    base = torch.ones(4, 8, dtype=torch.bfloat16)
    delta = torch.tensor([0.0, 2.0**-9, 2.0**-8, 2.0**-7] * 8).reshape(4, 8)
    assert count_unchanged(_rows(delta), base, "BF16", 0.0).within_rounding == 24
    assert count_unchanged(_rows(delta), base.float(), "F32", 0.0).within_rounding == 8
    tiny = torch.zeros(4, 8, dtype=torch.bfloat16)  # w = 0: the subnormal spacing 2^-133
    assert count_unchanged(_rows(torch.full((4, 8), 2.0**-135)), tiny, "BF16", 0.0).within_rounding == 32
    assert count_unchanged(_rows(torch.full((4, 8), 2.0**-132)), tiny, "BF16", 0.0).within_rounding == 0


@pytest.mark.parametrize("form", ["dense", "factors", "kron"])
def test_dense_rows_are_the_dense_delta_block_by_block(form: str, monkeypatch: pytest.MonkeyPatch) -> None:
    generator = torch.Generator().manual_seed(0)
    if form == "dense":
        delta = Delta("dense", 1.0, matrix=torch.randn(12, 10, generator=generator))
    elif form == "factors":
        left, right = torch.randn(12, 3, generator=generator), torch.randn(3, 10, generator=generator)
        delta = Delta("lora", None, left=left, right=right, scale=0.5)
    else:  # (3, 2) ⊗ (4, 5) = (12, 10): row blocks cut through the rows of W₁
        first, second = torch.randn(3, 2, generator=generator), torch.randn(4, 5, generator=generator)
        delta = Delta("lokr", None, kron=(first, second), scale=2.0)
    monkeypatch.setattr(deltas, "row_blocks", functools.partial(row_blocks, entries=30))  # 3 rows a block
    blocks = list(delta.dense_rows())
    assert [b for b, _ in blocks] == [slice(i, i + 3) for i in range(0, 12, 3)]
    torch.testing.assert_close(torch.cat([part for _, part in blocks]), delta.dense(), rtol=0, atol=1e-6)
