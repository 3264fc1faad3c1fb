"""The orthogonal matrices of OFT and BOFT, built from their saved parameters exactly as peft 0.21 builds them.

- Skew-symmetric blocks: OFT saves the strict upper triangle of each b × b block (row-major, `triu_indices`),
  Q = U − Uᵀ; BOFT saves whole blocks and uses Q = (X − Xᵀ)/2.
- Cayley transform: R = (I − Q)(I + Q)⁻¹ (exact; BOFT always, OFT with `use_cayley_neumann=false`).
- Cayley–Neumann series with k terms (OFT's default, k = 5): R = I + 2Q + 2Q² + … + 2Q^{k−2} + Q^{k−1}
  (k = 1: I; k = 2: I + 2Q), term for term as peft's `_cayley_batch`. Not orthogonal in general: ΔW is the one
  peft merges, so the series is reproduced, not replaced by the exact transform.
- COFT projection: a block with ‖Q‖_F > ε/√(number of blocks) is scaled to that norm (`_project_batch`).
"""

from __future__ import annotations

import torch


def skew_from_upper(vectors: torch.Tensor, block: int) -> torch.Tensor:
    """Q = U − Uᵀ from the strict upper triangles of each block. Shapes: (k, b(b−1)/2) -> (k, b, b)."""
    rows, cols = torch.triu_indices(block, block, 1)
    upper = torch.zeros(vectors.shape[0], block, block, dtype=vectors.dtype, device=vectors.device)
    upper[:, rows, cols] = vectors
    return upper - upper.mT


def coft_project(vectors: torch.Tensor, block: int, eps: float) -> torch.Tensor:
    """COFT's constraint: blocks with ‖Q‖_F > ε/√k scaled back to that norm. Shapes: (k, n) -> (k, n)."""
    skew = skew_from_upper(vectors, block)  # (k, b, b)
    limit = eps / float(vectors.shape[0]) ** 0.5
    norm = torch.linalg.vector_norm(skew, dim=(1, 2), keepdim=True)  # (k, 1, 1)
    projected = torch.where(norm <= limit, skew, limit * (skew / norm))
    rows, cols = torch.triu_indices(block, block, 1)
    return projected[:, rows, cols]


def cayley(skew: torch.Tensor) -> torch.Tensor:
    """R = (I − Q)(I + Q)⁻¹ per block (peft: `solve(I + Q, I − Q, left=False)`). Shapes: (k, b, b) -> (k, b, b)."""
    eye = torch.eye(skew.shape[-1], dtype=skew.dtype, device=skew.device).expand_as(skew)
    return torch.linalg.solve(eye + skew, eye - skew, left=False)


def cayley_neumann(skew: torch.Tensor, terms: int) -> torch.Tensor:
    """peft's truncated series I + 2Q + 2Q² + … + 2Q^{k−2} + Q^{k−1} (k = `terms`). Shapes: (k, b, b) -> (k, b, b)."""
    result = torch.eye(skew.shape[-1], dtype=skew.dtype, device=skew.device).repeat(skew.shape[0], 1, 1)
    if terms > 1:
        result = result + 2.0 * skew
        if terms > 2:
            power = skew @ skew
            result = result + 2.0 * power
            for _ in range(3, terms - 1):
                power = power @ skew
                result = result + 2.0 * power
            result = result + power @ skew
    return result


def oft_rotation_blocks(
    vectors: torch.Tensor,
    block: int,
    n_blocks: int,
    *,
    coft: bool,
    eps: float,
    neumann: bool,
    terms: int,
) -> torch.Tensor:
    """OFT's diagonal blocks R_k of the block-diagonal rotation (one shared block repeated with block_share).

    Shapes: vectors (k, b(b−1)/2), k = n_blocks or 1 (shared) -> (n_blocks, b, b).
    """
    if coft:
        vectors = coft_project(vectors, block, eps)
    skew = skew_from_upper(vectors, block)
    blocks = cayley_neumann(skew, terms) if neumann else cayley(skew)
    return blocks.expand(n_blocks, block, block) if blocks.shape[0] == 1 else blocks


def boft_rotation(blocks: torch.Tensor) -> torch.Tensor:
    """BOFT's rotation from its saved (N, D, H, H) blocks, as peft's `get_delta_weight`: per butterfly factor i,
    B_i = block_diag of Cayley((X − Xᵀ)/2), conjugated by its butterfly permutation, M_i = P_i B_i P_iᵀ; then
    R = M_{N−1} ⋯ M_1 M_0. Shapes -> (D·H, D·H). With N = 1 the permutation is the identity (R = B_0).
    """
    factors, count, size, _ = blocks.shape
    data = blocks.reshape(factors * count, size, size)
    rotated = cayley(0.5 * (data - data.mT)).reshape(factors, count, size, size)  # (N, D, H, H)
    n = count * size
    rotation: torch.Tensor | None = None
    for index in range(factors):
        block_diagonal = torch.block_diag(*torch.unbind(rotated[index]))  # (n, n)
        perm = butterfly_permutation(n, count // 2**index, size // 2, factors - 1).to(blocks.device)
        factor = block_diagonal[perm][:, perm]  # P B Pᵀ with P[a, perm[a]] = 1
        rotation = factor if rotation is None else factor @ rotation
    assert rotation is not None
    return rotation


def butterfly_permutation(n: int, blocks: int, half: int, butterfly: int) -> torch.Tensor:
    """peft's `block_butterfly_perm(n, b, r, n_butterfly_factor)`: within each of `blocks` chunks of n/blocks
    indices, the `half`-wide groups in even positions first, then those in odd positions (identity without
    butterfly factors). Returns the index vector `perm` (P[a, perm[a]] = 1)."""
    if butterfly == 0:
        return torch.arange(n)
    if blocks * half * 2 > n:
        raise ValueError(f"invalid BOFT butterfly: {blocks} blocks of 2×{half} exceed {n}")
    chunk = n // blocks
    groups = chunk // half
    order = [*range(0, groups, 2), *range(1, groups, 2)]
    within = torch.cat([torch.arange(g * half, g * half + half) for g in order])  # (chunk,)
    return torch.cat([start + within for start in range(0, n, chunk)])
