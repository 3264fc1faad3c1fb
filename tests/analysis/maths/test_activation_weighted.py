"""σ(ΔW Σ_x^{1/2}) on planted cases computed by hand: inputs that never occur hide a direction, larger inputs
reorder the spectrum, and a rotation of the input basis changes nothing."""

from __future__ import annotations

import pytest
import torch

from deltarank.analysis.maths.ranks import energy_rank
from deltarank.analysis.maths.svd import activation_weighted_singular_values

DELTA = torch.tensor([[3.0, 0, 0, 0], [0, 2.0, 0, 0], [0, 0, 0, 0]])  # σ = (3, 2, 0): r₀.₉ = 2 (9/13 < 0.9)


def test_unweighted_inputs_keep_the_spectrum() -> None:
    sigma = activation_weighted_singular_values(DELTA, torch.eye(4))
    assert sigma.tolist() == pytest.approx([3.0, 2.0, 0.0])
    assert energy_rank(sigma.numpy(), 0.9) == 2


def test_an_input_direction_that_never_occurs_drops_its_direction() -> None:
    sigma = activation_weighted_singular_values(DELTA, torch.diag(torch.tensor([1.0, 0, 1, 1])))
    assert sigma.tolist() == pytest.approx([3.0, 0.0, 0.0])  # ΔW Σ^{1/2} = diag(3, 0, 0)
    assert energy_rank(sigma.numpy(), 0.9) == 1


def test_larger_inputs_reorder_the_directions() -> None:
    # E[x₁²] = 1/4, E[x₂²] = 9: σ = (2·3, 3·½) = (6, 1.5); energy 36 of 38.25 = 94% in one direction
    sigma = activation_weighted_singular_values(DELTA, torch.diag(torch.tensor([0.25, 9.0, 1, 1])))
    assert sigma.tolist() == pytest.approx([6.0, 1.5, 0.0])
    assert energy_rank(sigma.numpy(), 0.9) == 1


def test_a_rotated_input_basis_gives_the_same_spectrum() -> None:
    q = torch.linalg.qr(torch.randn(4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64))[0]
    moment = q @ torch.diag(torch.tensor([0.25, 9.0, 1, 1], dtype=torch.float64)) @ q.mT
    sigma = activation_weighted_singular_values(DELTA.double() @ q.mT, moment)
    assert sigma.tolist() == pytest.approx([6.0, 1.5, 0.0], abs=1e-9)
