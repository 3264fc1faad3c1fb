"""From one delta to its `MatrixSpectrum`: σ → every rank and the noise edge. No branches on the delta's kind.

σ come from `deltarank.analysis.maths.svd` (dense solvers or the exact factor core); ‖ΔW‖_F, ‖W_base‖_F, the
erased fraction, the noise model and the entry counts of the sparsity profile come with the `Delta` (formed
once, see `maths.deltas`). Under the
randomized solver the record keeps the exact ‖ΔW‖_F, measures energy ranks against it and says
`approximate`; a rank the top-k σ cannot determine is None.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from deltarank.analysis.maths.deltas import Delta
from deltarank.analysis.maths.ranks import all_ranks, numerical_threshold, threshold_key, top_k_ranks
from deltarank.analysis.maths.reference import random_energy_rank
from deltarank.analysis.maths.sparsity import EntryCounts
from deltarank.analysis.maths.svd import delta_singular_values, singular_values
from deltarank.analysis.results.sparsity import SparsityProfile
from deltarank.analysis.results.spectrum import MatrixSpectrum
from deltarank.io.naming import layer_index, module_type
from deltarank.io.pairing import AdapterPair, Pair, QuantizationPair
from deltarank.io.standalone import StoredMatrix


@dataclass(frozen=True)
class MeasureSettings:
    """How to measure: compute dtype, energy thresholds, solver (resolved, see `maths.svd`), top-k, and the
    absolute tolerance of the sparsity profile (None: no profile; the loader counts the entries, see
    `loading.LoadedPair.delta`)."""

    dtype: torch.dtype
    thresholds: tuple[float, ...]
    solver: str = "svd"
    top_k: int | None = None
    sparsity_atol: float | None = None


def measure(
    pair: Pair, delta: Delta, settings: MeasureSettings, sigma: torch.Tensor | None = None
) -> MatrixSpectrum:
    """The spectrum record of one delta; `sigma` when a batched call already has it."""
    if sigma is None:
        sigma = delta_singular_values(delta, settings.solver, settings.top_k)
    values = sigma.cpu().numpy().astype(np.float64)
    approximate = delta.matrix is not None and settings.solver == "randomized"
    numerical_edge = numerical_threshold(values, min(pair.shape), float(torch.finfo(settings.dtype).eps))
    edge = delta.noise.edge(numerical_edge) if delta.noise is not None else 0.0
    if approximate:
        assert delta.norm is not None
        delta_norm = delta.norm
        ranks = top_k_ranks(values, delta_norm**2, settings.thresholds, numerical_edge, edge)
    else:
        delta_norm = float(np.sqrt(np.sum(values**2)))
        ranks = all_ranks(values, settings.thresholds, numerical_edge, edge)
    return MatrixSpectrum(
        name=pair.name,
        layer=layer_index(pair.name),
        module=record_module(pair),
        shape=pair.shape,
        kind=delta.kind,
        singular_values=tuple(values.tolist()),
        ranks=ranks,
        delta_norm=delta_norm,
        base_norm=delta.base_norm,
        erased_fraction=delta.erased,
        random_energy_90=random_energy_rank(pair.shape[0], pair.shape[1], 0.9),
        base_dtype=pair.base_dtype,
        tuned_dtype=pair.tuned_dtype,
        noise_edge=max(edge, numerical_edge),
        at_noise_level=delta_norm > 0 and ranks["noise_floor"] == 0,
        lora_rank=pair.module.rank if isinstance(pair, AdapterPair) else None,
        approximate=approximate,
        rank_bound=delta.rank_bound,
        random_ranks={
            threshold_key(t): random_energy_rank(pair.shape[0], pair.shape[1], t) for t in settings.thresholds
        },
        sparsity=None if delta.counts is None else sparsity_profile(delta.counts, ranks, pair.shape),
    )


def sparsity_profile(
    counts: EntryCounts, ranks: dict[str, float | None], shape: tuple[int, int]
) -> SparsityProfile:
    """The record's sparsity profile: the entry counts as shares of m·n, and the numerical rank (σ above
    σ₁·min(m, n)·eps, the rank the record already counts) ÷ min(m, n), None when the spectrum cannot tell."""
    entries = max(counts.entries, 1)
    numerical = ranks.get("numerical")
    return SparsityProfile(
        unchanged=counts.unchanged / entries,
        within_atol=counts.within_atol / entries,
        within_rounding=None if counts.within_rounding is None else counts.within_rounding / entries,
        rank_fraction=None if numerical is None else numerical / max(min(shape), 1),
    )


def record_module(pair: Pair) -> str:
    """The module label of a record: the weight's module type (`q_proj`), or the label of a part or a
    standalone matrix (`q_proj:quantization_error`, `virtual_tokens`, `self_attn.down`)."""
    if isinstance(pair, QuantizationPair | StoredMatrix):
        return pair.label
    return module_type(pair.name)


def measure_batch(batch: list[tuple[Pair, Delta]], settings: MeasureSettings) -> list[MatrixSpectrum]:
    """Measure several deltas; same-shape dense ones share one batched decomposition (the GPU path)."""
    dense = [delta.matrix for _, delta in batch if delta.matrix is not None]
    if len(dense) < 2 or len(dense) < len(batch) or len({m.shape for m in dense}) != 1:
        return [measure(pair, delta, settings) for pair, delta in batch]
    sigmas = singular_values(torch.stack(dense), settings.solver, settings.top_k).cpu()  # (B, k)
    return [measure(pair, delta, settings, sigma) for (pair, delta), sigma in zip(batch, sigmas, strict=True)]
