"""The singular-value solvers: the float64 Gram path against a float64 SVD, and the labelled approximate one."""

from __future__ import annotations

import pytest
import torch

from deltarank.analysis.maths.svd import gram_error_bound, resolve_solver, singular_values
from deltarank.errors import DeltarankError

SHAPES = [(64, 64), (48, 96), (96, 48), (7, 130)]


@pytest.mark.parametrize("shape", SHAPES)
def test_gram_is_within_its_documented_bound(shape: tuple[int, int]) -> None:
    generator = torch.Generator().manual_seed(1)
    delta = torch.randn(shape, generator=generator)
    reference = torch.linalg.svdvals(delta.double())
    gram = singular_values(delta, "gram").double()
    n = min(shape)
    assert gram.shape == (n,)
    assert torch.all(gram[:-1] >= gram[1:])  # descending
    assert float((gram - reference).abs().max()) <= gram_error_bound(n) * float(reference[0])


def test_gram_keeps_a_planted_spectrum() -> None:
    u, _ = torch.linalg.qr(torch.randn(80, 3, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(50, 3, dtype=torch.float64))
    delta = (u @ torch.diag(torch.tensor([5.0, 2.0, 0.5], dtype=torch.float64)) @ v.T).float()
    sigma = singular_values(delta, "gram")
    assert sigma[:3].tolist() == pytest.approx([5.0, 2.0, 0.5], rel=1e-5)
    assert float(sigma[3:].max()) < 5.0 * gram_error_bound(50)


def test_batched_gram_matches_one_by_one() -> None:
    batch = torch.randn(4, 30, 20, generator=torch.Generator().manual_seed(2))
    together = singular_values(batch, "gram")
    assert together.shape == (4, 20)
    for i in range(4):
        assert torch.allclose(together[i], singular_values(batch[i], "gram"))


def test_randomized_top_k_finds_a_low_rank_spectrum() -> None:
    u, _ = torch.linalg.qr(torch.randn(100, 4))
    v, _ = torch.linalg.qr(torch.randn(60, 4))
    delta = u @ torch.diag(torch.tensor([8.0, 4.0, 2.0, 1.0])) @ v.T
    assert singular_values(delta, "randomized", top_k=4).tolist() == pytest.approx([8, 4, 2, 1], rel=1e-4)


def test_auto_picks_gram_on_cpu_at_float32_only() -> None:
    cpu = torch.device("cpu")
    assert resolve_solver("auto", cpu, torch.float32) == "gram"
    assert resolve_solver("auto", cpu, torch.float64) == "svd"
    assert resolve_solver("auto", torch.device("cuda"), torch.float32) == "svd"
    assert resolve_solver("svd", cpu, torch.float32) == "svd"
    with pytest.raises(DeltarankError, match="unknown solver"):
        resolve_solver("lanczos", cpu, torch.float32)
