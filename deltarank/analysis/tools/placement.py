"""Placement of a fine-tune relative to its base: where each ΔW lands among W₀'s singular directions.

"The Path Not Taken" (arXiv 2511.08567) reports RL updates avoiding W₀'s principal directions while SFT
distorts its spectrum; PiSSA initialises LoRA in W₀'s principal directions, MiLoRA in its minor ones. Per
matrix this measures (definitions and chance levels: `deltarank.analysis.maths.placement`):

- the share of ‖ΔW‖_F² in W₀'s top-k and bottom-k left and right singular directions, with its chance k/d,
  for k matched to ΔW's own r₀.₉ and for the sizes asked for;
- the principal angles between W₀'s and W''s top-k left and right subspaces (cosines, mean cos²);
- the relative change of W₀'s top singular values.

W₀ and W' are decomposed by the thin SVD the intruder analysis uses (`maths.svd.weight_svd`); ΔW is formed by
its kind's form in the compute dtype (both weights upcast before subtracting) and W' is the stored tuned weight
(or W₀ + ΔW for an adapter, as intruders merge it). Memory per matrix: W₀, W', ΔW and the two SVDs' vectors;
one pair is read ahead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from deltarank import __version__
from deltarank.analysis.engine.compute import ProgressHook, resolve_device, resolve_precision
from deltarank.analysis.engine.loading import with_base
from deltarank.analysis.engine.plan import plan_one
from deltarank.analysis.maths.placement import (
    chance_share,
    direction_energies,
    mean_squared_cosine,
    principal_cosines,
    relative_sigma_change,
    squared_norm,
    subspace_shares,
)
from deltarank.analysis.maths.ranks import energy_rank
from deltarank.analysis.maths.svd import resolve_solver, singular_values, weight_svd
from deltarank.analysis.results.placement import (
    MATCHED_KEY,
    MatrixPlacement,
    PlacementResult,
    SubspacePlacement,
    module_placements,
    size_key,
)
from deltarank.analysis.tools.intruders import tuned_weight
from deltarank.errors import OptionError
from deltarank.io.naming import Selection, layer_index, module_type
from deltarank.io.pairing import Pair

__all__ = [
    "DEFAULT_SIGMA_TOP",
    "MatrixPlacement",
    "PlacementResult",
    "WeightPlacement",
    "check_sizes",
    "placement",
    "weight_placement",
]

DEFAULT_SIGMA_TOP = 8
MATCHED_TAU = 0.9  # k matched to ΔW's r₀.₉ (key `energy_90`)


@dataclass(frozen=True)
class WeightPlacement:
    """The measures of one matrix, before it is named (the fields of `MatrixPlacement` of the same names)."""

    delta_norm: float
    base_norm: float
    energy_90: int
    subspaces: tuple[SubspacePlacement, ...]
    base_sigma: tuple[float, ...]
    tuned_sigma: tuple[float, ...]
    sigma_change: tuple[float | None, ...]


def check_sizes(sizes: Sequence[int], sigma_top: int) -> tuple[int, ...]:
    """Validate the asked subspace sizes and t; the sizes are returned sorted, de-duplicated.

    Raises:
        OptionError: a size or t below 1.
    """
    values = tuple(sorted({int(k) for k in sizes}))
    if values and values[0] < 1:
        raise OptionError(f"--sizes must be positive integers, got {list(sizes)}")
    if sigma_top < 1:
        raise OptionError(f"--top-k must be at least 1, got {sigma_top}")
    return values


def subspace_placement(
    key: str,
    k: int,
    energies: tuple[np.ndarray, np.ndarray],
    total: float,
    base_svd: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    tuned_svd: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    shape: tuple[int, int],
) -> SubspacePlacement:
    """One subspace size's entry from W₀'s direction energies and both weights' singular vectors."""
    left_top, left_bottom = subspace_shares(energies[0], total, k)
    right_top, right_bottom = subspace_shares(energies[1], total, k)
    left_cos = principal_cosines(base_svd[0][:, :k], tuned_svd[0][:, :k])
    right_cos = principal_cosines(base_svd[2][:, :k], tuned_svd[2][:, :k])
    return SubspacePlacement(
        key=key,
        k=k,
        left_top=left_top,
        left_bottom=left_bottom,
        left_chance=chance_share(k, shape[0]),
        right_top=right_top,
        right_bottom=right_bottom,
        right_chance=chance_share(k, shape[1]),
        left_cosines=tuple(float(c) for c in left_cos),
        right_cosines=tuple(float(c) for c in right_cos),
        left_mean_cos2=mean_squared_cosine(left_cos),
        right_mean_cos2=mean_squared_cosine(right_cos),
    )


def weight_placement(
    base: torch.Tensor,
    tuned: torch.Tensor,
    delta: torch.Tensor,
    sizes: Sequence[int] = (),
    sigma_top: int = DEFAULT_SIGMA_TOP,
    solver: str = "svd",
) -> WeightPlacement:
    """Every placement measure of one matrix.

    Args:
        base: W₀, shape (m, n), in the compute dtype.
        tuned: W', shape (m, n), same dtype and device.
        delta: ΔW = W' − W₀ as its form made it, shape (m, n).
        sizes: Subspace sizes besides ΔW's r₀.₉ (clipped to min(m, n)).
        sigma_top: How many of W₀'s top σ to compare.
        solver: Resolved σ solver of ΔW (`svd` or `gram`) for its r₀.₉.

    Returns:
        ‖ΔW‖_F, ‖W₀‖_F, ΔW's r₀.₉, one entry per subspace size (r₀.₉ first, none for it when ΔW = 0), both
        weights' top σ and their relative change.
    """
    shape = (int(base.shape[0]), int(base.shape[1]))
    width = min(shape)
    total = squared_norm(delta)
    matched = energy_rank(singular_values(delta, solver).cpu().numpy(), MATCHED_TAU)
    base_svd = weight_svd(base)  # U (m, p), σ (p,), V (n, p)
    energies = direction_energies(delta, base_svd[0], base_svd[2])
    tuned_svd = weight_svd(tuned)
    keyed = [(MATCHED_KEY, matched)] if matched > 0 else []
    keyed += [(size_key(k), min(k, width)) for k in sizes]
    subspaces = tuple(
        subspace_placement(key, k, energies, total, base_svd, tuned_svd, shape) for key, k in keyed
    )
    base_sigma = base_svd[1][:sigma_top].cpu().to(torch.float64).numpy()
    tuned_sigma = tuned_svd[1][:sigma_top].cpu().to(torch.float64).numpy()
    return WeightPlacement(
        delta_norm=float(np.sqrt(total)),
        base_norm=float(np.sqrt(squared_norm(base))),
        energy_90=int(matched),
        subspaces=subspaces,
        base_sigma=tuple(float(s) for s in base_sigma),
        tuned_sigma=tuple(float(s) for s in tuned_sigma),
        sigma_change=relative_sigma_change(base_sigma, tuned_sigma, sigma_top),
    )


def placement(
    base: str | Path,
    tuned: str | Path,
    *,
    sizes: Sequence[int] = (),
    sigma_top: int = DEFAULT_SIGMA_TOP,
    include: str | None = None,
    exclude: str | None = None,
    device: str = "auto",
    precision: str = "float32",
    progress: ProgressHook | None = None,
    allow_different_base: bool = False,
) -> PlacementResult:
    """Where every selected ΔW = TUNED − BASE lands relative to BASE's singular directions.

    Args:
        base: Base checkpoint (a built-in name, .safetensors file, Hugging Face directory, GGUF or repo id).
        tuned: Tuned checkpoint, PEFT adapter directory (merged as W₀ + ΔW in the compute dtype) or train output.
        sizes: Subspace sizes k besides the one matched to each ΔW's r₀.₉ (clipped per matrix to min(m, n)).
        sigma_top: How many of W₀'s top singular values to compare with W''s.
        include: Regex of tensor names instead of the default (transformer-block 2-D weights).
        exclude: Regex of tensor names to leave out.
        device: auto, cpu or cuda.
        precision: float32 or float64.
        progress: Called as progress(done, total, name) after each matrix.
        allow_different_base: Compare a TUNED whose config describes another architecture (else refused).

    Returns:
        A PlacementResult with one MatrixPlacement per matrix and the per-module medians and quartiles.
    """
    asked = check_sizes(sizes, sigma_top)
    dev, dtype = resolve_device(device), resolve_precision(precision)
    solver = resolve_solver("auto", dev, dtype)
    base_source, plan = plan_one(
        base, tuned, Selection(include=include, exclude=exclude), allow_different_base
    )

    records = []
    with with_base(plan.pairs, base_source, plan.source, dev, progress) as loads:
        for loaded in loads:
            base_w = loaded.tensors["base"].to(dtype)  # (m, n)
            delta = loaded.delta(dtype).dense()
            tuned_w = tuned_weight(loaded, dtype, delta)
            measures = weight_placement(base_w, tuned_w, delta, asked, sigma_top, solver)
            records.append(_record(loaded.pair, measures))
            del loaded, base_w, tuned_w, delta
    matrices = tuple(records)
    return PlacementResult(
        base=str(base),
        tuned=str(tuned),
        sizes=asked,
        sigma_top=sigma_top,
        device=str(dev),
        precision=precision,
        matrices=matrices,
        modules=module_placements(matrices, sigma_top),
        skipped=plan.skipped,
        deltarank_version=__version__,
    )


def _record(pair: Pair, measures: WeightPlacement) -> MatrixPlacement:
    return MatrixPlacement(
        name=pair.name,
        layer=layer_index(pair.name),
        module=module_type(pair.name),
        shape=pair.shape,
        kind=pair.kind,
        base_dtype=pair.base_dtype,
        tuned_dtype=pair.tuned_dtype,
        delta_norm=measures.delta_norm,
        base_norm=measures.base_norm,
        energy_90=measures.energy_90,
        subspaces=measures.subspaces,
        base_sigma=measures.base_sigma,
        tuned_sigma=measures.tuned_sigma,
        sigma_change=measures.sigma_change,
    )
