"""Per-module LoRA ranks from the measured singular values of ΔW = TUNED − BASE (`deltarank recommend`).

The spectrum engine measures every selected ΔW (`deltarank.analysis.engine.spectrum`, exact σ); the ranks
follow one of two policies (`deltarank.analysis.maths.rank_allocation`):

- energy τ: each matrix's r_τ, the smallest r whose top-r σ hold a share τ of ‖ΔW‖_F²;
- budget N: N trainable LoRA parameters, spent greedily on the ranks that add the most energy per parameter
  σ_k² / (out + in);
- budget rank R: the budget N = Σ R·(out + in) of a uniform rank-R LoRA on the same analysed matrices (the best
  allocation at the cost of LoRA r = R), spent as budget N.

Either way no rank goes past a matrix's noise floor: the spectrum's own noise-floor rank (σ above the storage
rounding edge and the numerical edge, `MatrixSpectrum.ranks['noise_floor']`), and with a null spectrum file
(e.g. `deltarank spectrum` of two seeds' runs, or of the base against a run on its own samples) also no σ at or
below that null ΔW's σ₁ for the same matrix: directions a run of another seed would not reproduce.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from deltarank import __version__
from deltarank.analysis.engine import spectrum
from deltarank.analysis.engine.compute import ProgressHook
from deltarank.analysis.engine.plan import plan_one
from deltarank.analysis.maths.rank_allocation import (
    budget_ranks,
    energy_ranks,
    lora_cost,
    retained_curve,
    uniform_budget,
)
from deltarank.analysis.maths.ranks import count_above
from deltarank.analysis.results.recommendation import (
    ALPHA_PER_RANK,
    MatrixRecommendation,
    RecommendationResult,
    curve_length,
    default_rank,
    residual,
)
from deltarank.analysis.results.spectrum import NOT_DELTAS, MatrixSpectrum, SpectrumResult
from deltarank.errors import DeltarankError, InputError, OptionError
from deltarank.io.naming import Selection

__all__ = ["check_policy", "read_null", "recommend"]

# Records of a QLoRA adapter besides its trained LoRA delta: the base's quantisation, not something to train.
NOT_TRAINED = NOT_DELTAS | {"quantization_error", "qlora_total"}
WEIGHT_SUFFIX = ".weight"


def check_policy(energy: float | None, budget: int | None, budget_rank: int | None = None) -> None:
    """Exactly one policy, in range.

    Raises:
        OptionError: two or none, τ outside (0, 1], N or R below 1.
    """
    if sum(value is not None for value in (energy, budget, budget_rank)) != 1:
        raise OptionError("give exactly one of --energy τ, --budget N and --budget-rank R")
    if energy is not None and not 0.0 < energy <= 1.0:
        raise OptionError(f"--energy must lie in (0, 1], got {energy}")
    if budget is not None and budget < 1:
        raise OptionError(f"--budget must be a positive number of parameters, got {budget}")
    if budget_rank is not None and budget_rank < 1:
        raise OptionError(f"--budget-rank must be a positive LoRA rank, got {budget_rank}")


def read_null(path: str | Path | None) -> dict[str, MatrixSpectrum] | None:
    """The records of a null spectrum file by tensor name, or None without a file.

    Raises:
        InputError: unreadable, or not a deltarank.spectrum/1 file.
    """
    if path is None:
        return None
    null = SpectrumResult.from_json(path)
    return {m.name: m for m in null.matrices if m.kind not in NOT_TRAINED}


def recommend(
    base: str | Path,
    tuned: str | Path,
    *,
    energy: float | None = None,
    budget: int | None = None,
    budget_rank: int | None = None,
    null: str | Path | None = None,
    include: str | None = None,
    exclude: str | None = None,
    device: str = "auto",
    precision: str = "float32",
    progress: ProgressHook | None = None,
    allow_different_base: bool = False,
) -> RecommendationResult:
    """LoRA ranks per weight matrix from the singular values of each ΔW = TUNED − BASE.

    Args:
        base: Base checkpoint (anything `deltarank spectrum` reads as BASE).
        tuned: Tuned checkpoint, PEFT adapter directory or `deltarank train` output.
        energy: τ in (0, 1]: each matrix's r_τ (exclusive with `budget`).
        budget: N trainable LoRA parameters, allocated greedily (exclusive with `energy`).
        budget_rank: R: the budget is Σ R·(out + in) over the analysed matrices, a uniform rank-R LoRA's
            parameters (exclusive with the other two).
        null: A spectrum result of a null ΔW (same matrices): no rank keeps a σ at or below its σ₁.
        include: Regex of tensor names instead of the default (transformer-block 2-D weights).
        exclude: Regex of tensor names to leave out.
        device: auto, cpu or cuda.
        precision: float32 or float64.
        progress: Called as progress(done, total, name) after each matrix.
        allow_different_base: Compare a TUNED whose config describes another architecture (else refused).

    Raises:
        OptionError: not exactly one policy, a value out of range, or a budget that buys no rank.
        InputError: an unreadable null file, or one that lacks a matrix of TUNED or has another shape.
        DeltarankError: no ΔW above its noise floor (nothing to recommend).
    """
    check_policy(energy, budget, budget_rank)
    null_records = read_null(null)
    selection = Selection(include=include, exclude=exclude)
    if budget is not None:  # from the headers, before any decomposition: a budget no matrix's rank fits in
        _, plan = plan_one(base, tuned, selection, allow_different_base)
        _refuse_small_budget(budget, [(p.name, p.shape) for p in plan.pairs if len(p.shape) == 2])
    measured = spectrum(
        base,
        tuned,
        device=device,
        precision=precision,
        include=include,
        exclude=exclude,
        sparsity_atol=None,
        allow_different_base=allow_different_base,
        progress=progress,
    )
    records = [m for m in measured.matrices if m.kind not in NOT_TRAINED]
    if not records:
        raise DeltarankError(f"{tuned}: no weight delta to recommend ranks for")
    if budget_rank is not None:  # a uniform rank-R LoRA on every analysed matrix, changed or not
        budget = uniform_budget([m.shape for m in records], budget_rank)
    floors = [_floor(m, null_records, null) for m in records]
    caps = [_cap(m, floor) for m, floor in zip(records, floors, strict=True)]
    spectra = [np.asarray(m.singular_values, dtype=np.float64) for m in records]
    if not any(caps):
        raise DeltarankError(f"{tuned}: no ΔW has a singular value above its noise floor; nothing to train")
    bound, optimal = None, None
    if energy is not None:
        ranks = energy_ranks(spectra, energy, caps)
    else:
        assert budget is not None
        _refuse_small_budget(budget, [(m.name, m.shape) for m, cap in zip(records, caps, strict=True) if cap])
        allocation = budget_ranks(spectra, [m.shape for m in records], budget, caps)
        ranks, bound, optimal = allocation.ranks, allocation.bound, allocation.optimal
    total = sum(float(np.sum(s**2)) for s in spectra)
    kept = sum(float(np.sum(s[:r] ** 2)) for s, r in zip(spectra, ranks, strict=True))
    if optimal:
        bound = kept  # the same sum, free of the greedy's summation order
    matrices = tuple(
        _record(m, r, cap, floor) for m, r, cap, floor in zip(records, ranks, caps, floors, strict=True)
    )
    lora_r = default_rank(list(ranks))
    return RecommendationResult(
        base=str(base),
        tuned=str(tuned),
        policy="energy" if energy is not None else "budget",
        energy=energy,
        budget=budget,
        budget_rank=budget_rank,
        null=None if null is None else str(null),
        lora_r=lora_r,
        lora_alpha=ALPHA_PER_RANK * lora_r,
        trainable_parameters=sum(m.parameters for m in matrices),
        retained_energy=kept / total if total else 0.0,
        energy_bound=None if bound is None else (min(1.0, max(bound, kept) / total) if total else 0.0),
        optimal=optimal,
        device=measured.device,
        precision=measured.precision,
        matrices=matrices,
        skipped=measured.skipped,
        deltarank_version=__version__,
    )


def _floor(
    record: MatrixSpectrum, null: dict[str, MatrixSpectrum] | None, null_path: str | Path | None
) -> float | None:
    """σ at or below which this matrix's directions count as noise: its storage-noise edge, raised to the null
    ΔW's σ₁ of the same matrix; None when neither is known.

    Raises:
        InputError: the null file lacks this matrix, or holds it with another shape.
    """
    edge = record.noise_edge if record.noise_edge > 0 else None
    if null is None or null_path is None:
        return edge
    match = null.get(record.name)
    if match is None:
        raise InputError(null_path, f"the null spectrum has no record of {record.name} (a matrix of TUNED)")
    if tuple(match.shape) != tuple(record.shape):
        raise InputError(
            null_path,
            f"{record.name} has shape {tuple(match.shape)} in the null spectrum, {record.shape} here",
        )
    top = float(match.singular_values[0]) if match.singular_values else 0.0
    return max(top, edge or 0.0)


def _cap(record: MatrixSpectrum, floor: float | None) -> int:
    """The largest rank a matrix may take: its noise-floor rank (σ above the storage and numerical edges; all
    of min(out, in) when the spectrum does not say), and no σ at or below `floor`."""
    width = min(record.shape)
    recorded = record.ranks.get("noise_floor")
    cap = width if recorded is None else int(recorded)
    if floor is not None:
        cap = min(cap, count_above(record.singular_values, floor))
    return min(cap, width)


def _refuse_small_budget(budget: int, shapes: Sequence[tuple[str, tuple[int, ...]]]) -> None:
    """Refuse a budget below the cost of one rank of the cheapest of these (name, shape) matrices.

    Raises:
        OptionError: naming the cheapest matrix and its cost.
    """
    name, shape = min(shapes, key=lambda item: lora_cost(item[1], 1))
    cheapest = lora_cost(shape, 1)
    if budget < cheapest:
        raise OptionError(
            f"--budget {budget} buys no rank: the cheapest, rank 1 of {name.removesuffix(WEIGHT_SUFFIX)} "
            f"{tuple(shape)}, costs {cheapest} parameters (out + in)"
        )


def _record(m: MatrixSpectrum, rank: int, cap: int, floor: float | None) -> MatrixRecommendation:
    width = min(m.shape)
    curve = retained_curve(m.singular_values, curve_length(width, rank))
    share = retained_curve(m.singular_values, rank)[-1] if rank > 0 else 0.0
    return MatrixRecommendation(
        name=m.name.removesuffix(WEIGHT_SUFFIX),
        layer=m.layer,
        module=m.module,
        shape=(int(m.shape[0]), int(m.shape[1])),
        kind=m.kind,
        rank=int(rank),
        cap=int(cap),
        noise_floor=floor,
        parameters=lora_cost(m.shape, rank),
        delta_norm=m.delta_norm,
        retained_energy=share,
        residual=residual(share) if m.delta_norm > 0 else 0.0,
        curve=curve,
    )
