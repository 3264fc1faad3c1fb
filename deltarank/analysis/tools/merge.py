"""Merge geometry of n deltas of one matrix: how TIES and DARE would treat them (`similarity` with n ≥ 3 TUNED).

Per matrix, from the n dense deltas in the compute dtype (`deltarank.analysis.maths.merging` defines the
measures): TIES's trimmed signs at `density`, the pairwise and n-way sign-conflict rates among them, and DARE's
relative errors at each drop rate, per delta and for the merged sum, with one mask per (matrix, delta) seeded
by (seed, CRC-32 of the matrix name, delta index). The n × n subspace overlap is φ's (`tools.similarity`).

Memory beside the n deltas: their n int8 trimmed signs, two int16 counters, and for DARE one uniform draw, one
residual, the sum of the deltas and one accumulator per drop rate.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from deltarank.analysis.maths.merging import (
    dare_errors,
    dare_uniforms,
    nway_sign_conflict,
    pairwise_sign_conflicts,
    trimmed_signs,
)
from deltarank.analysis.results.merge import MatrixMerge, Table
from deltarank.errors import OptionError

DEFAULT_MERGE_K = 16
DEFAULT_DENSITY = 0.2
DEFAULT_DARE_DROPS = (0.5, 0.9)
DEFAULT_SEED = 0


@dataclass(frozen=True)
class MergeSettings:
    """What the merge geometry measures.

    Attributes:
        k: Subspace size of the n × n overlap (clipped per matrix).
        density: Share of entries TIES's trim keeps, in (0, 1].
        drops: DARE drop rates p, each in [0, 1).
        seed: Seed of the DARE masks.
    """

    k: int = DEFAULT_MERGE_K
    density: float = DEFAULT_DENSITY
    drops: tuple[float, ...] = DEFAULT_DARE_DROPS
    seed: int = DEFAULT_SEED


def check_merge(settings: MergeSettings) -> MergeSettings:
    """The settings, checked.

    Raises:
        OptionError: k below 1, a density outside (0, 1] or a drop rate outside [0, 1).
    """
    if settings.k < 1:
        raise OptionError(f"--merge-k must be at least 1, got {settings.k}")
    if not 0.0 < settings.density <= 1.0:
        raise OptionError(f"--density must lie in (0, 1], got {settings.density:g}")
    for drop in settings.drops:
        if not 0.0 <= drop < 1.0:
            raise OptionError(f"--dare-drops must each lie in [0, 1), got {drop:g}")
    return settings


def mask_entropy(seed: int, name: str, index: int) -> tuple[int, int, int]:
    """The SeedSequence entropy of the DARE mask of delta `index` of matrix `name`."""
    return seed, zlib.crc32(name.encode("utf-8")), index


def matrix_merge(
    name: str,
    deltas: Sequence[torch.Tensor],
    overlap: Table,
    k: int,
    kinds: Sequence[str],
    available: Sequence[int],
    settings: MergeSettings,
) -> MatrixMerge:
    """The merge record of one matrix.

    Args:
        name: Canonical name of the matrix (seeds its DARE masks).
        deltas: The n dense ΔW, each (m, n), one dtype and device.
        overlap: The n × n φ(k, k) of their top-k singular vectors.
        k: The subspace size used for `overlap`.
        kinds: How each ΔW was obtained.
        available: Singular vectors of each ΔW above the numerical cut-off.
        settings: Density, drop rates and seed.
    """
    signs = [trimmed_signs(delta, settings.density) for delta in deltas]
    kept = tuple(int((s != 0).sum()) for s in signs)
    pairwise = pairwise_sign_conflicts(signs)
    nway = nway_sign_conflict(signs)
    del signs
    shape = (int(deltas[0].shape[0]), int(deltas[0].shape[1]))

    def uniforms(index: int) -> torch.Tensor:
        draw = dare_uniforms(shape, mask_entropy(settings.seed, name, index))
        return torch.from_numpy(draw).to(deltas[0].device)

    errors, merged = dare_errors(deltas, settings.drops, uniforms)
    return MatrixMerge(
        kinds=tuple(kinds),
        available=tuple(available),
        k=k,
        overlap=overlap,
        kept=kept,
        sign_conflict=pairwise,
        sign_conflict_nway=nway,
        dare_error=errors,
        dare_merged_error=merged,
    )
