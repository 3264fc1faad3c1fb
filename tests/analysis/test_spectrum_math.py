"""Pure maths of deltas: upcast before subtracting, the exact LoRA QR fast path, DoRA's ΔW."""

from __future__ import annotations

import pytest
import torch

from deltarank.analysis.maths.deltas import DeltaInputs, dense_form, dora_form, form_delta
from deltarank.analysis.maths.svd import delta_singular_values, factored_singular_values, singular_values
from tests.planting import planted_delta

SIGMA_RTOL = 1e-10  # float64 throughout


def _randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def dense_delta(base: torch.Tensor, tuned: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    inputs = DeltaInputs("dense", "F16" if base.dtype == torch.float16 else "BF16")
    delta = dense_form({"base": base, "tuned": tuned}, inputs, dtype)
    assert delta.matrix is not None
    return delta.matrix


def lora_singular_values(b: torch.Tensor, a: torch.Tensor, scale: float, dtype: torch.dtype) -> torch.Tensor:
    return factored_singular_values(b.to(dtype), a.to(dtype), scale)


def dora_delta(
    base: torch.Tensor, b: torch.Tensor, a: torch.Tensor, m: torch.Tensor, scale: float, dtype: torch.dtype
) -> torch.Tensor:
    tensors = {"base": base, "lora_B": b, "lora_A": a, "magnitude": m}
    return dora_form(tensors, DeltaInputs("dora", "F64", scale), dtype).dense()


def test_dense_delta_upcasts_before_subtracting() -> None:
    # In fp16, 60000 − (−60000) overflows to inf; after the upcast it is 120000 exactly.
    base = torch.tensor([[-60000.0]], dtype=torch.float16)
    tuned = torch.tensor([[60000.0]], dtype=torch.float16)
    assert torch.isinf(tuned - base).all()
    assert dense_delta(base, tuned, torch.float32).item() == 120000.0
    # bf16 1 + 2^-7 − 1 is exact once upcast.
    one = torch.ones(1, 1, dtype=torch.bfloat16)
    assert dense_delta(one, one + 2.0**-7, torch.float32).item() == 2.0**-7


def test_singular_values_of_a_planted_delta() -> None:
    delta = planted_delta((12, 20), [4.0, 3.0, 2.0, 1.0], seed=1)
    sigma = singular_values(delta, "svd")
    assert sigma[:4].tolist() == pytest.approx([4.0, 3.0, 2.0, 1.0], rel=SIGMA_RTOL)
    assert float(sigma[4:].abs().max()) < 1e-12


@pytest.mark.parametrize(
    ("out_features", "rank", "in_features", "scale"),
    [
        (24, 4, 16, 2.0),  # tall
        (8, 4, 40, 0.5),  # wide
        (6, 8, 10, 1.0),  # r above out: R_B is (6, 8)
        (16, 3, 16, -1.5),  # negative scale: σ are |s|·σ(BA)
    ],
)
def test_lora_fast_path_equals_svd_of_the_product(
    out_features: int, rank: int, in_features: int, scale: float
) -> None:
    b = _randn(out_features, rank, seed=1)
    a = _randn(rank, in_features, seed=2)
    expected = torch.linalg.svdvals(scale * b @ a)[: min(rank, out_features, in_features)]
    fast = lora_singular_values(b, a, scale, torch.float64)
    assert fast.shape == expected.shape
    torch.testing.assert_close(fast, expected, rtol=SIGMA_RTOL, atol=0.0)


def test_lora_fast_path_upcasts_bf16_factors() -> None:
    b = _randn(20, 4, seed=3).to(torch.bfloat16)
    a = _randn(4, 12, seed=4).to(torch.bfloat16)
    expected = torch.linalg.svdvals(2.0 * b.double() @ a.double())[:4]
    torch.testing.assert_close(
        lora_singular_values(b, a, 2.0, torch.float64), expected, rtol=SIGMA_RTOL, atol=0.0
    )


def test_dora_delta_by_hand() -> None:
    # W = [[3, 4], [1, 0]], B = 0: W' = m ⊙ W / ‖W‖_row with row norms 5 and 1.
    base = torch.tensor([[3.0, 4.0], [1.0, 0.0]], dtype=torch.float64)
    b = torch.zeros(2, 1, dtype=torch.float64)
    a = torch.ones(1, 2, dtype=torch.float64)
    magnitude = torch.tensor([10.0, 2.0], dtype=torch.float64)
    delta = dora_delta(base, b, a, magnitude, scale=1.0, dtype=torch.float64)
    assert delta.tolist() == [[3.0, 4.0], [1.0, 0.0]]  # rows doubled: ΔW = W
    # m equal to ‖W + sBA‖_row: W' = W + sBA, ΔW is exactly the LoRA product.
    b = torch.tensor([[1.0], [0.0]], dtype=torch.float64)
    adapted = base + 0.5 * b @ a  # [[3.5, 4.5], [1, 0]]
    magnitude = torch.linalg.vector_norm(adapted, dim=1)
    delta = dora_delta(base, b, a, magnitude, scale=0.5, dtype=torch.float64)
    torch.testing.assert_close(delta, 0.5 * b @ a, rtol=0.0, atol=1e-14)


@pytest.mark.parametrize("fan_in_fan_out", [False, True])
def test_a_lora_delta_is_kept_as_factors_in_the_stored_orientation(fan_in_fan_out: bool) -> None:
    b, a = _randn(12, 3, seed=5), _randn(3, 7, seed=6)
    delta = form_delta(
        {"lora_B": b, "lora_A": a}, DeltaInputs("lora", "F64", 0.75, fan_in_fan_out), torch.float64
    )
    assert delta.matrix is None and delta.low_rank
    product = 0.75 * b @ a  # (out, in)
    torch.testing.assert_close(delta.dense(), product.mT if fan_in_fan_out else product, rtol=0.0, atol=1e-14)
    sigma = delta_singular_values(delta, "svd")  # every min(m, n) σ, zeros past r
    assert sigma.shape == (7,)
    torch.testing.assert_close(sigma[:3], torch.linalg.svdvals(product)[:3], rtol=SIGMA_RTOL, atol=0.0)
    assert sigma[3:].abs().max() == 0.0
