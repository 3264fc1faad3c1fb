"""From one loaded tensor pair to its `MatrixSpectrum`: the delta, its σ, every rank and the noise edge."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from deltarank.analysis.host import frobenius_norm, host_array
from deltarank.analysis.noise import StorageNoise, storage_noise
from deltarank.analysis.ranks import all_ranks, numerical_threshold
from deltarank.analysis.reference import random_energy_rank
from deltarank.analysis.results import MatrixSpectrum
from deltarank.analysis.solvers import singular_values
from deltarank.analysis.spectrum import dense_delta, dora_delta, lora_singular_values
from deltarank.io.naming import layer_index, module_type
from deltarank.io.pairing import AdapterPair, DensePair


@dataclass
class DenseStats:
    """What a dense pair's record needs from the whole tensors besides σ, computed on the loader thread.

    Attributes:
        noise: The tuned tensor's storage-noise figures.
        base_norm: ‖W_base‖_F, or None when the compute device is not the CPU (then measured there).
        delta: ΔW in the compute dtype when the compute device is the CPU, else None.
        erased: Fraction of exactly-zero entries of `delta` (None with it).
    """

    noise: StorageNoise
    base_norm: float | None = None
    delta: torch.Tensor | None = None
    erased: float | None = None


@dataclass
class LoadedDense:
    """A dense pair read from disk (stored dtypes, on the compute device), with its loader-side figures."""

    pair: DensePair
    base: torch.Tensor
    tuned: torch.Tensor
    stats: DenseStats | None = None


@dataclass
class LoadedAdapter:
    """LoRA/DoRA factors read from disk; `base` only for DoRA."""

    pair: AdapterPair
    b: torch.Tensor
    a: torch.Tensor
    magnitude: torch.Tensor | None
    base: torch.Tensor | None


Loaded = LoadedDense | LoadedAdapter


@dataclass(frozen=True)
class MeasureSettings:
    """How to measure: compute dtype, energy thresholds, solver (resolved, see solvers.py), top-k."""

    dtype: torch.dtype
    thresholds: tuple[float, ...]
    solver: str = "svd"
    top_k: int | None = None


def measure(loaded: Loaded, settings: MeasureSettings) -> MatrixSpectrum:
    """Compute the spectrum record of one loaded pair."""
    if isinstance(loaded, LoadedDense):
        return _measure_dense(loaded, settings)
    return _measure_adapter(loaded, settings)


def measure_batch(batch: list[Loaded], settings: MeasureSettings) -> list[MatrixSpectrum]:
    """Measure several pairs; same-shape dense deltas share one batched decomposition (the GPU path)."""
    dense = [item for item in batch if isinstance(item, LoadedDense)]
    if len(dense) < 2 or len({item.pair.shape for item in dense}) != 1:
        return [measure(item, settings) for item in batch]
    deltas = [dense_delta(d.base, d.tuned, settings.dtype) for d in dense]  # each (m, n)
    sigmas = iter(singular_values(torch.stack(deltas), settings.solver, settings.top_k).cpu())
    formed = iter(deltas)
    return [
        _measure_dense(item, settings, next(sigmas), next(formed))
        if isinstance(item, LoadedDense)
        else measure(item, settings)
        for item in batch
    ]


def _measure_dense(
    loaded: LoadedDense,
    settings: MeasureSettings,
    sigma_t: torch.Tensor | None = None,
    delta: torch.Tensor | None = None,
) -> MatrixSpectrum:
    """One dense record; `sigma_t` and `delta` when a batched call already has them."""
    pair, dtype, thresholds = loaded.pair, settings.dtype, settings.thresholds
    stats = loaded.stats or DenseStats(storage_noise(loaded.tuned.cpu(), pair.tuned_dtype))
    if delta is None:
        delta = (
            stats.delta if stats.delta is not None else dense_delta(loaded.base, loaded.tuned, dtype)
        )  # (m, n)
    if sigma_t is None:
        sigma_t = singular_values(delta, settings.solver, settings.top_k)
    sigma = sigma_t.cpu().numpy().astype(np.float64)
    floor = numerical_threshold(sigma, min(pair.shape), float(torch.finfo(dtype).eps))
    edge = stats.noise.edge(floor)
    erased = stats.erased if stats.erased is not None else float((delta == 0).sum()) / delta.numel()
    base_norm = stats.base_norm
    if base_norm is None:
        base_norm = float(torch.linalg.vector_norm(loaded.base.to(dtype)))
    return _record(pair, "dense", sigma, dtype, thresholds, edge, base_norm, erased, None)


def dense_stats(base: torch.Tensor, tuned: torch.Tensor, tuned_dtype: str, dtype: torch.dtype) -> DenseStats:
    """The loader-side figures of a dense pair held on the CPU, in NumPy (see `deltarank.analysis.host`).

    Args:
        base: Base weights (stored dtype, CPU).
        tuned: Tuned weights (stored dtype, CPU).
        tuned_dtype: The tuned tensor's stored dtype label (for the noise model).
        dtype: Compute dtype of ΔW.
    """
    base_values = host_array(base, dtype)
    delta = host_array(tuned, dtype) - base_values  # upcast first, then subtract
    delta_norm = frobenius_norm(delta)
    rows, cols = delta.shape
    # The numerical floor is σ₁·min(m, n)·eps and σ₁ ≥ ‖ΔW‖_F / √min(m, n): a lower bound of it before the σ
    # are known (0.99 absorbs rounding in the norm).
    floor_hint = 0.99 * delta_norm * math.sqrt(min(rows, cols)) * float(torch.finfo(dtype).eps)
    return DenseStats(
        noise=storage_noise(tuned, tuned_dtype, floor_hint),
        base_norm=frobenius_norm(base_values),
        delta=torch.from_numpy(delta),
        erased=float(np.count_nonzero(delta == 0)) / max(delta.size, 1),  # faster than on floats
    )


def _measure_adapter(loaded: LoadedAdapter, settings: MeasureSettings) -> MatrixSpectrum:
    pair, dtype, thresholds = loaded.pair, settings.dtype, settings.thresholds
    scale = pair.module.scale
    if pair.dora:
        assert loaded.base is not None and loaded.magnitude is not None
        base = loaded.base.T if pair.fan_in_fan_out else loaded.base  # DoRA maths on (out, in)
        delta = dora_delta(base, loaded.b, loaded.a, loaded.magnitude, scale, dtype)
        solver = settings.solver if settings.solver != "randomized" else "svd"
        sigma = singular_values(delta, solver).cpu().numpy().astype(np.float64)
        base_norm: float | None = float(torch.linalg.vector_norm(base.to(dtype)))
        kind = "dora"
    else:
        r_sigma = lora_singular_values(loaded.b, loaded.a, scale, dtype).cpu().numpy().astype(np.float64)
        sigma = np.zeros(min(pair.shape))
        sigma[: r_sigma.size] = r_sigma  # the other σ of a rank-r product are exactly 0
        base_norm = None
        kind = "lora"
    return _record(pair, kind, sigma, dtype, thresholds, 0.0, base_norm, None, pair.module.rank)


def _record(
    pair: DensePair | AdapterPair,
    kind: str,
    sigma: np.ndarray,
    dtype: torch.dtype,
    thresholds: tuple[float, ...],
    edge: float,
    base_norm: float | None,
    erased: float | None,
    lora_rank: int | None,
) -> MatrixSpectrum:
    n = min(pair.shape)
    numerical_edge = numerical_threshold(sigma, n, float(torch.finfo(dtype).eps))
    ranks = all_ranks(sigma, thresholds, numerical_edge, edge)
    delta_norm = float(np.sqrt(np.sum(sigma**2)))
    return MatrixSpectrum(
        name=pair.name,
        layer=layer_index(pair.name),
        module=module_type(pair.name),
        shape=pair.shape,
        kind=kind,
        singular_values=tuple(float(s) for s in sigma),
        ranks=ranks,
        delta_norm=delta_norm,
        base_norm=base_norm,
        erased_fraction=erased,
        random_energy_90=random_energy_rank(pair.shape[0], pair.shape[1], 0.9),
        base_dtype=pair.base_dtype,
        tuned_dtype=pair.tuned_dtype,
        noise_edge=max(edge, numerical_edge),
        at_noise_level=delta_norm > 0 and ranks["noise_floor"] == 0,
        lora_rank=lora_rank,
    )
