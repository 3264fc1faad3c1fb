"""Intruder dimensions (Shuttleworth et al. 2024, "LoRA vs Full Fine-tuning: An Illusion of Equivalence").

Among the top k left singular vectors u'_1 … u'_k of the tuned weights W' (not of ΔW), vector j is an
intruder when max_i |cos(u'_j, u_i)| < ε over all left singular vectors u_i of the base weights W. LoRA
produces them, full fine-tuning rarely does.

"All left singular vectors of W" are the min(m, n) columns of its thin SVD: for a square W a full orthonormal
basis of R^m (so max_i |cos| ≥ 1/√m always), for m > n the n vectors paired with a singular value (the
completion to a basis of R^m is not unique, so it is not used). Memory per matrix: W, W', the base's U and
the tuned top-k vectors.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from deltarank import __version__
from deltarank.analysis.engine.compute import ProgressHook, resolve_device, resolve_precision
from deltarank.analysis.engine.loading import LoadedPair, with_base
from deltarank.analysis.engine.plan import Plan, plan_one
from deltarank.analysis.maths.svd import weight_svd
from deltarank.analysis.results.intruders import (
    IntruderResult,
    MatrixIntruders,
    count_intruders,
    sweep_key,
)
from deltarank.errors import OptionError
from deltarank.io.naming import Selection, layer_index, module_type
from deltarank.io.pairing import Pair

__all__ = [
    "IntruderResult",
    "MatrixIntruders",
    "count_intruders",
    "intruder_record",
    "intruders",
    "max_cosines",
    "weight_intruders",
]
DEFAULT_TOP_K = 10
DEFAULT_EPSILON = 0.5
EPSILON_SWEEP: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def max_cosines(base_u: torch.Tensor, tuned_u: torch.Tensor) -> torch.Tensor:
    """max_i |cos(u'_j, u_i)| for each tuned vector j; columns are unit vectors, so cos = u'_jᵀ u_i.

    Shapes: base_u (m, p), tuned_u (m, k) -> (k,).
    """
    return (tuned_u.mT @ base_u).abs().amax(dim=1)  # (k, p) -> (k,)


def weight_intruders(
    base: torch.Tensor, tuned: torch.Tensor, top_k: int
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Max |cos| of each of the top-k left singular vectors of W' against all of W's, and W''s top-k σ.

    Shapes: base (m, n), tuned (m, n), both in the compute dtype -> k values each, k = min(top_k, m, n).
    """
    _, tuned_s, _, cos = intruder_directions(base, tuned, top_k)
    k = cos.numel()
    return tuple(float(c) for c in cos.cpu()), tuple(float(s) for s in tuned_s[:k].cpu())


def intruder_directions(
    base: torch.Tensor, tuned: torch.Tensor, top_k: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """W''s thin SVD and the max |cos| of each of its top-k left singular vectors against all of W's: the one
    intruder test (`weight_intruders` reports it, `mitigate.mitigated_weight` scales what it finds).

    Shapes: base (m, n), tuned (m, n) -> U' (m, p), σ' (p,), V' (n, p), cos (k,), p = min(m, n),
    k = min(top_k, p).
    """
    base_u = weight_svd(base)[0]  # (m, p)
    tuned_u, tuned_s, tuned_v = weight_svd(tuned)
    k = min(top_k, tuned_s.numel())
    return tuned_u, tuned_s, tuned_v, max_cosines(base_u, tuned_u[:, :k])


def tuned_weight(loaded: LoadedPair, dtype: torch.dtype, delta: torch.Tensor | None = None) -> torch.Tensor:
    """W' in `dtype`: the tuned tensor of two checkpoints, or W + ΔW merged in `dtype` for an adapter (`delta`:
    its dense ΔW when the caller has formed it already)."""
    if "tuned" in loaded.tensors:
        return loaded.tensors["tuned"].to(dtype)
    formed = loaded.delta(dtype).dense() if delta is None else delta
    return loaded.tensors["base"].to(dtype) + formed


def check_epsilons(epsilon: float, epsilons: Sequence[float], top_k: int) -> tuple[float, ...]:
    """Validate ε, the sweep and k; the sweep is returned sorted, de-duplicated."""
    sweep = tuple(sorted({float(e) for e in epsilons}))
    if any(not 0.0 < e <= 1.0 for e in (epsilon, *sweep)):
        raise OptionError(f"--epsilon values must lie in (0, 1], got {epsilon} and sweep {list(sweep)}")
    if top_k < 1:
        raise OptionError(f"--top-k must be at least 1, got {top_k}")
    return sweep


def intruders(
    base: str | Path,
    tuned: str | Path,
    *,
    top_k: int = DEFAULT_TOP_K,
    epsilon: float = DEFAULT_EPSILON,
    epsilons: Sequence[float] = EPSILON_SWEEP,
    include: str | None = None,
    exclude: str | None = None,
    device: str = "auto",
    precision: str = "float32",
    progress: ProgressHook | None = None,
    allow_different_base: bool = False,
) -> IntruderResult:
    """Intruder dimensions of every selected weight of TUNED against BASE (Shuttleworth et al. 2024).

    Vector j of the top-k left singular vectors of W' is an intruder when max_i |cos(u'_j, u_i)| < ε over all
    left singular vectors u_i of W. A LoRA/DoRA adapter is merged as W' = W + ΔW in the compute dtype.

    Args:
        base: Base checkpoint (.safetensors file, Hugging Face directory or GGUF).
        tuned: Tuned checkpoint, or a PEFT LoRA/DoRA adapter directory.
        top_k: How many top singular vectors of W' to test.
        epsilon: Cosine threshold ε of the headline count.
        epsilons: The ε sweep also stored per matrix.
        include: Regex of tensor names instead of the default (transformer-block 2-D weights).
        exclude: Regex of tensor names to leave out.
        device: auto, cpu or cuda.
        precision: float32 or float64.
        progress: Called as progress(done, total, name) after each matrix.
        allow_different_base: Compare a TUNED whose config describes another architecture (else refused).

    Returns:
        An IntruderResult with one MatrixIntruders per matrix.
    """
    sweep = check_epsilons(epsilon, epsilons, top_k)
    dev, dtype = resolve_device(device), resolve_precision(precision)
    base_source, plan = plan_one(
        base, tuned, Selection(include=include, exclude=exclude), allow_different_base
    )

    records = []
    with with_base(plan.pairs, base_source, plan.source, dev, progress) as loads:
        for loaded in loads:
            pair = loaded.pair
            base_w = loaded.tensors["base"].to(dtype)  # (m, n)
            max_cos, tuned_sigma = weight_intruders(base_w, tuned_weight(loaded, dtype), top_k)
            records.append(intruder_record(pair, pair.kind, max_cos, tuned_sigma, epsilon, sweep))
            del loaded, base_w
    return intruder_result(base, tuned, top_k, epsilon, sweep, str(dev), precision, tuple(records), plan)


def intruder_result(
    base: str | Path,
    tuned: str | Path,
    top_k: int,
    epsilon: float,
    sweep: tuple[float, ...],
    device: str,
    precision: str,
    records: tuple[MatrixIntruders, ...],
    plan: Plan,
) -> IntruderResult:
    """The result file of an intruder analysis (`intruders`, and `mitigate` of the same matrices)."""
    return IntruderResult(
        base=str(base),
        tuned=str(tuned),
        top_k=top_k,
        epsilon=epsilon,
        epsilons=sweep,
        device=device,
        precision=precision,
        matrices=records,
        skipped=plan.skipped,
        deltarank_version=__version__,
    )


def intruder_record(
    pair: Pair,
    kind: str,
    max_cos: tuple[float, ...],
    tuned_sigma: tuple[float, ...],
    epsilon: float,
    sweep: tuple[float, ...],
) -> MatrixIntruders:
    """One matrix's record: its top-k max |cos| and σ, the count at ε and at each ε of the sweep."""
    return MatrixIntruders(
        name=pair.name,
        layer=layer_index(pair.name),
        module=module_type(pair.name),
        shape=pair.shape,
        kind=kind,
        max_cos=max_cos,
        tuned_sigma=tuned_sigma,
        count=count_intruders(max_cos, epsilon),
        sweep={sweep_key(e): count_intruders(max_cos, e) for e in sweep},
    )
