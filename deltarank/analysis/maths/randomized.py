"""The seeded randomised range finder behind every approximate top singular value of deltarank."""

from __future__ import annotations

import torch

RANDOMIZED_SEED = 0


def seeded_top_sigma(matrix: torch.Tensor, q: int, iters: int, seed: int = RANDOMIZED_SEED) -> torch.Tensor:
    """The top q σ of a matrix by a randomised range finder with `iters` power iterations, from a seeded
    Gaussian test matrix: the same σ on every run (torch.svd_lowrank draws from the global generator).

    Shapes: (m, n) -> (q,), q ≤ min(m, n).
    """
    generator = torch.Generator(device=matrix.device).manual_seed(seed)
    probe = torch.randn(matrix.shape[1], q, generator=generator, dtype=matrix.dtype, device=matrix.device)
    basis = torch.linalg.qr(matrix @ probe).Q  # (m, q)
    for _ in range(iters):  # each pass sharpens the basis towards the top singular subspace
        basis = torch.linalg.qr(matrix.mT @ basis).Q  # (n, q)
        basis = torch.linalg.qr(matrix @ basis).Q  # (m, q)
    return torch.linalg.svdvals(basis.mT @ matrix)  # σ of the (q, n) projection
