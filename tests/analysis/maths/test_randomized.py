"""The seeded randomised range finder: the same σ on every run, and the top σ of a planted spectrum."""

from __future__ import annotations

import torch

from deltarank.analysis.maths.randomized import seeded_top_sigma
from deltarank.analysis.maths.svd import randomized_singular_values
from tests.planting import planted_delta


def test_the_same_sigma_on_every_run_whatever_the_global_generator() -> None:
    matrix = torch.randn(300, 200, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(1)
    first = seeded_top_sigma(matrix, 8, 4)
    torch.manual_seed(2)  # the global generator moved: torch.svd_lowrank would now draw another probe
    assert torch.equal(seeded_top_sigma(matrix, 8, 4), first)
    assert not torch.equal(seeded_top_sigma(matrix, 8, 4, seed=5), first)  # the seed is what decides


def test_the_top_sigma_of_a_planted_spectrum() -> None:
    sigma = [9.0, 7.0, 5.0, 3.0] + [1e-3] * 20
    delta = planted_delta((240, 160), sigma, seed=3)
    top = randomized_singular_values(delta, 4)
    assert top.shape == (4,)
    assert torch.allclose(top, torch.tensor([9.0, 7.0, 5.0, 3.0], dtype=delta.dtype), rtol=1e-9)
