"""Synthetic spectrum and subspace (intruder, similarity, extract) results with planted answers, for the
figure and plot/compare CLI tests.

No model, no decomposition: singular values are written down directly, so every rank is known.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
from scipy import optimize

from deltarank.analysis.maths.ranks import energy_rank
from deltarank.analysis.maths.reference import random_energy_rank
from deltarank.analysis.results import MatrixSpectrum, SparsityProfile, SpectrumResult
from deltarank.analysis.results.extract import ExtractResult, MatrixExtract
from deltarank.analysis.results.placement import (
    MatrixPlacement,
    PlacementResult,
    SubspacePlacement,
    module_placements,
)
from deltarank.analysis.results.similarity import MatrixSimilarity, SimilarityResult
from deltarank.analysis.tools.intruders import EPSILON_SWEEP, IntruderResult, MatrixIntruders, count_intruders

# A scaled-down SmolLM2 block: (out, in) per module type.
SHAPES: dict[str, tuple[int, int]] = {"q_proj": (48, 48), "k_proj": (16, 48), "down_proj": (48, 128)}


_NODES, _WEIGHTS = np.polynomial.legendre.leggauss(200)


def marchenko_pastur_sigma(rows: int, cols: int) -> np.ndarray:
    """The Gaussian reference computed independently of `deltarank.analysis.maths.reference`: the
    Marchenko–Pastur quantiles σ_i = √x_i with P(X > x_i) = (i + ½)/n, descending.

    With x = c + d·cos θ the density's square-root edges vanish, so the tail probability is a smooth integral
    in θ (Gauss–Legendre, 200 nodes) and each quantile a root of it (brentq); the package instead tabulates the
    CDF in σ on a grid and interpolates. The two agree to ~1e-7 relative.
    """
    n, big = min(rows, cols), max(rows, cols)
    y = n / big
    lo, hi = (1 - y**0.5) ** 2, (1 + y**0.5) ** 2
    c, d = (lo + hi) / 2, (hi - lo) / 2

    def upper_tail(theta: float) -> float:  # P(X > c + d·cos θ) = ∫₀^θ f(c + d·cos t)·d·sin t dt
        t = theta / 2 * (_NODES + 1)
        integrand = d**2 * np.sin(t) ** 2 / (2 * np.pi * y * (c + d * np.cos(t)))
        return float(theta / 2 * np.sum(_WEIGHTS * integrand))

    thetas = [
        optimize.brentq(lambda th, p=(i + 0.5) / n: upper_tail(th) - p, 0.0, np.pi, xtol=1e-15)
        for i in range(n)
    ]
    return np.sqrt(c + d * np.cos(np.asarray(thetas)))


def energy_90_by_hand(sigma: Sequence[float]) -> int:
    """Smallest k with σ₁² + … + σ_k² ≥ 0.9·Σσ², by a plain loop (not the package's energy_rank)."""
    squares = [float(s) ** 2 for s in sigma]
    total, running = sum(squares), 0.0
    for k, square in enumerate(squares, start=1):
        running += square
        if running >= 0.9 * total:
            return k
    return len(squares)


def energy_90(sigma: Sequence[float]) -> int:
    """r₀.₉ of a spectrum: smallest k with Σ_{i≤k} σ_i² ≥ 0.9 Σ σ_i²."""
    return energy_rank(sigma, 0.9)


def matrix(
    module: str,
    layer: int,
    sigma: Sequence[float],
    shape: tuple[int, int],
    kind: str = "dense",
    lora_rank: int | None = None,
    noise_floor: int | None = None,
) -> MatrixSpectrum:
    """A MatrixSpectrum record with the ranks of the given σ."""
    values = tuple(float(v) for v in sigma)
    return MatrixSpectrum(
        name=f"model.layers.{layer}.{module}.weight",
        layer=layer,
        module=module,
        shape=shape,
        kind=kind,
        singular_values=values,
        ranks={"energy_90": float(energy_90(values)), "noise_floor": float(noise_floor or energy_90(values))},
        delta_norm=float(np.linalg.norm(values)),
        base_norm=1.0,
        erased_fraction=None if kind != "dense" else 0.0,
        random_energy_90=random_energy_rank(shape[0], shape[1], 0.9),
        base_dtype="float32",
        tuned_dtype="float32",
        lora_rank=lora_rank,
    )


def full_spectrum(n: int, decay: float, layer: int, seed: int = 0) -> np.ndarray:
    """A slowly decaying full-rank spectrum σ_i ∝ i^-decay with small layer-dependent jitter."""
    rng = np.random.default_rng(seed * 1000 + layer)
    sigma = (np.arange(n) + 1.0) ** -decay * (1 + 0.05 * rng.random(n))
    return np.sort(sigma)[::-1]


def full_result(
    tuned: str = "runs/code/full",
    layers: int = 4,
    decay: float = 0.35,
    shapes: dict[str, tuple[int, int]] | None = None,
    seed: int = 0,
) -> SpectrumResult:
    """A dense (full fine-tuning) result with `layers` blocks of the given module shapes."""
    mats = [
        matrix(module, layer, full_spectrum(min(shape), decay + 0.004 * layer, layer, seed), shape)
        for layer in range(layers)
        for module, shape in (shapes or SHAPES).items()
    ]
    return SpectrumResult(
        base="base", tuned=tuned, device="cpu", precision="float32", thresholds=(0.9,), matrices=tuple(mats)
    )


def lora_result(
    tuned: str = "runs/code/lora",
    rank: int = 4,
    layers: int = 4,
    shapes: dict[str, tuple[int, int]] | None = None,
) -> SpectrumResult:
    """A LoRA result: r non-zero σ per matrix (the fast path), lora_rank = r."""
    mats = []
    for layer in range(layers):
        for module, shape in (shapes or SHAPES).items():
            sigma = np.zeros(min(shape))
            sigma[:rank] = np.linspace(1.0, 0.3, rank) * (1 + 0.1 * layer)
            mats.append(matrix(module, layer, sigma, shape, kind="lora", lora_rank=rank, noise_floor=rank))
    return SpectrumResult(
        base="base", tuned=tuned, device="cpu", precision="float32", thresholds=(0.9,), matrices=tuple(mats)
    )


def planted_result(
    tuned: str, energy: dict[str, float], noise: dict[str, float] | None = None
) -> SpectrumResult:
    """A result whose stored energy_90 per module type is exactly `energy` (one matrix each, 256 × 256)."""
    mats = []
    for module, value in energy.items():
        base = matrix(module, 0, np.ones(256), (256, 256))
        ranks = {"energy_90": float(value), "noise_floor": float((noise or energy)[module])}
        mats.append(MatrixSpectrum(**{**base.__dict__, "ranks": ranks}))
    return SpectrumResult(
        base="base", tuned=tuned, device="cpu", precision="float32", thresholds=(0.9,), matrices=tuple(mats)
    )


def with_sparsity(
    result: SpectrumResult, profile: Callable[[MatrixSpectrum], SparsityProfile], atol: float = 1e-5
) -> SpectrumResult:
    """`result` with the sparsity profile `profile(record)` in every record, measured at `atol`."""
    matrices = tuple(replace(m, sparsity=profile(m)) for m in result.matrices)
    return replace(result, matrices=matrices, sparsity_atol=atol)


def summary_dict(points: bool = True) -> dict[str, object]:
    """A reproduction summary.json (schema deltarank.reproduce/1) with a known Pareto front."""
    base = {"target_loss": 2.0, "general_loss": 3.0}
    rows = [
        ("full", 20, 1.6, 3.10),
        ("full", 40, 1.3, 3.25),
        ("full", 60, 1.1, 3.40),
        ("lora", 20, 1.8, 3.02),
        ("lora", 40, 1.7, 3.05),
        ("lora", 60, 1.65, 3.20),  # dominated by full @ 20 (learns less, forgets more)
    ]
    return {
        "schema": "deltarank.reproduce/1",
        "domain": "code",
        "lora_r": 16,
        "modules": {"q_proj": {"full_energy_90_median": 224, "lora_energy_90_median": 12, "dim": 576}},
        "learning": {"base": 2.0, "full": 1.1, "lora": 1.65},
        "forgetting": {"full": 0.40, "lora": 0.20},
        "cost": {"full": {}, "lora": {}},
        "base": base,
        "points": [
            {"run": r, "step": s, "tokens": s * 512, "target_loss": t, "general_loss": g}
            for r, s, t, g in rows
        ]
        if points
        else [],
    }


def write_summary(path: Path, points: bool = True) -> Path:
    """Write `summary_dict()` to `path` and return it."""
    path.write_text(json.dumps(summary_dict(points)))
    return path


# The subspace results: three layers of three module types, (out, in) each.
MODULES = {"q_proj": (16, 16), "down_proj": (16, 32), "up_proj": (32, 16)}
LAYERS = 3


def intruder_result(kind: str, max_cos: float) -> IntruderResult:
    """Every matrix of layer L has L + (kind == lora) top vectors at |cos| = max_cos, the rest at 1."""
    matrices = []
    for layer in range(LAYERS):
        for module, shape in MODULES.items():
            low = layer + (kind == "lora")
            cos = tuple([max_cos] * low + [1.0] * (4 - low))
            matrices.append(
                MatrixIntruders(
                    f"model.layers.{layer}.mlp.{module}.weight",
                    layer,
                    module,
                    shape,
                    kind,
                    cos,
                    (4.0, 3.0, 2.0, 1.0),
                    count_intruders(cos, 0.5),
                    {f"{e:g}": count_intruders(cos, e) for e in EPSILON_SWEEP},
                )
            )
    return IntruderResult("base", f"runs/{kind}", 4, 0.5, EPSILON_SWEEP, "cpu", "float32", tuple(matrices))


def similarity_result() -> SimilarityResult:
    """φ(i, j) = (layer + 1) / 10 everywhere; layer 2 of up_proj has fewer vectors (grid clipped)."""
    matrices = []
    for layer in range(LAYERS):
        for module, shape in MODULES.items():
            tops_b = (1, 2) if (module == "up_proj" and layer == 2) else (1, 2, 4)
            grid = tuple(tuple((layer + 1) / 10 for _ in tops_b) for _ in (1, 2, 4))
            matrices.append(
                MatrixSimilarity(
                    f"model.layers.{layer}.{module}.weight",
                    layer,
                    module,
                    shape,
                    "lora",
                    "dense",
                    4,
                    len(tops_b),
                    (1, 2, 4),
                    tops_b,
                    grid,
                    (0.5,) * len(tops_b),
                )
            )
    return SimilarityResult(
        "base", "runs/lora", "runs/full", "left", (1, 2, 4), "cpu", "float32", tuple(matrices)
    )


def extract_result() -> ExtractResult:
    matrices = []
    for layer in range(LAYERS):
        for module, shape in MODULES.items():
            sigma = tuple(float(v) for v in 2.0 ** -np.arange(min(shape)))
            energy = float(np.sum(np.square(sigma[:2])) / np.sum(np.square(sigma)))
            name = f"model.layers.{layer}.{module}.weight"
            matrices.append(MatrixExtract(name, layer, module, shape, "dense", 2, energy, sigma))
    return ExtractResult("base", "full", "out", None, 0.9, 2, "float32", "float32", "cpu", tuple(matrices))


def placement_entry(
    key: str, k: int, shape: tuple[int, int], top: float | None, bottom: float | None
) -> SubspacePlacement:
    """One subspace size of a planted placement record: shares `top`/`bottom` on both sides, chance k/m and k/n."""
    return SubspacePlacement(
        key=key,
        k=k,
        left_top=top,
        left_bottom=bottom,
        left_chance=k / shape[0],
        right_top=top,
        right_bottom=bottom,
        right_chance=k / shape[1],
        left_cosines=(1.0,) * k,
        right_cosines=(1.0,) * k,
        left_mean_cos2=1.0,
        right_mean_cos2=1.0,
    )


def placement_record(
    module: str, layer: int | None, shape: tuple[int, int], top: float, k: int
) -> MatrixPlacement:
    """A planted placement record: top share `top` at k = r₀.₉ and 0.5 at k = 2."""
    return MatrixPlacement(
        name=f"model.layers.{layer}.{module}.weight" if layer is not None else f"{module}.weight",
        layer=layer,
        module=module,
        shape=shape,
        kind="dense",
        base_dtype="F32",
        tuned_dtype="F32",
        delta_norm=1.0,
        base_norm=10.0,
        energy_90=k,
        subspaces=(
            placement_entry("energy_90", k, shape, top, 1 - top),
            placement_entry("k2", 2, shape, 0.5, 0.1),
        ),
        base_sigma=(2.0, 1.0),
        tuned_sigma=(2.2, 1.0),
        sigma_change=(0.1, 0.0),
    )


def placement_result() -> PlacementResult:
    """A planted placement result: 4 q_proj layers (top share 0.2·layer), 4 up_proj (0.9), an lm_head."""
    matrices = (
        *(placement_record("q_proj", layer, (32, 32), 0.2 * layer, k=layer + 1) for layer in range(4)),
        *(placement_record("up_proj", layer, (64, 32), 0.9, k=4) for layer in range(4)),
        placement_record("lm_head", None, (128, 32), 0.5, k=4),  # no layer: not drawn
    )
    return PlacementResult(
        base="base",
        tuned="runs/rl",
        sizes=(2,),
        sigma_top=2,
        device="cpu",
        precision="float32",
        matrices=matrices,
        modules=module_placements(matrices, 2),
    )
