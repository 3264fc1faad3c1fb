"""Subspace similarity of two weight deltas (Hu et al. 2021, LoRA paper §7).

φ(A, B, i, j) = ‖U_Aᵢᵀ U_Bⱼ‖_F² / min(i, j) ∈ [0, 1], where U_Aᵢ holds the top-i left singular vectors of ΔW_A
(right ones with side="right"). φ = 1 when one subspace contains the other, 0 when they are orthogonal; two
random subspaces of R^m give about max(i, j)/m. Compare full fine-tuning with LoRA, or two seeds, per matrix.

A LoRA delta's vectors come from its factors (QR of B and Aᵀ, an r × r SVD) without forming B·A. Only vectors
with a σ above the numerical cut-off count (those past it span an arbitrary subspace), so each side's sizes
are clipped to that count: i ∈ {min(t, available_A) : t ∈ top}. Memory: one pair plus the two vector sets.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from deltarank import __version__
from deltarank.analysis.engine.compute import ProgressHook, resolve_device, resolve_precision
from deltarank.analysis.engine.loading import LoadedPair, load_pair, prefetched
from deltarank.analysis.engine.plan import Plan, plan_run
from deltarank.analysis.maths.svd import DeltaSVD, delta_svd
from deltarank.analysis.results.similarity import MatrixSimilarity, SimilarityResult
from deltarank.errors import DeltarankError, OptionError
from deltarank.io.naming import Selection, layer_index, module_type
from deltarank.io.pairing import Pair, SkippedTensor

__all__ = ["MatrixSimilarity", "SimilarityResult", "overlap_energy", "phi", "phi_grid", "similarity"]

DEFAULT_TOP: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
SIDES = ("left", "right")


def overlap_energy(u_a: torch.Tensor, u_b: torch.Tensor) -> torch.Tensor:
    """E[i−1, j−1] = ‖U_Aᵢᵀ U_Bⱼ‖_F² for every i ≤ I, j ≤ J, by 2-D cumulative sums of (U_Aᵀ U_B)².

    Shapes: u_a (m, I), u_b (m, J), orthonormal columns -> (I, J), float64.
    """
    gram = (u_a.mT @ u_b).to(torch.float64) ** 2  # (I, J)
    return gram.cumsum(dim=0).cumsum(dim=1)


def phi(u_a: torch.Tensor, u_b: torch.Tensor, i: int, j: int) -> float:
    """φ(A, B, i, j) = ‖U_Aᵢᵀ U_Bⱼ‖_F² / min(i, j) of the first i columns of u_a and j of u_b (m, ·)."""
    overlap = (u_a[:, :i].mT @ u_b[:, :j]).to(torch.float64)  # (i, j)
    return float((overlap**2).sum()) / min(i, j)


def phi_grid(
    u_a: torch.Tensor, u_b: torch.Tensor, tops_a: Sequence[int], tops_b: Sequence[int]
) -> tuple[tuple[tuple[float, ...], ...], tuple[float, ...]]:
    """φ(i, j) for i in tops_a (rows), j in tops_b (columns), and the diagonal φ(i, i) for i = 1 … min(I, J).

    Shapes: u_a (m, I ≥ max(tops_a)), u_b (m, J ≥ max(tops_b)).
    """
    energy = overlap_energy(u_a, u_b)  # (I, J)
    grid = tuple(tuple(float(energy[i - 1, j - 1]) / min(i, j) for j in tops_b) for i in tops_a)
    size = min(energy.shape)
    sizes = torch.arange(1, size + 1, dtype=torch.float64)
    diagonal = tuple(float(v) for v in torch.diagonal(energy)[:size] / sizes)
    return grid, diagonal


def clip_tops(top: Sequence[int], available: int) -> tuple[int, ...]:
    """Subspace sizes clipped to the available vectors: sorted {min(t, available)}."""
    return tuple(sorted({min(t, available) for t in top}))


def check_tops(top: Sequence[int]) -> tuple[int, ...]:
    """Sizes must be positive integers; returned sorted and de-duplicated."""
    values = tuple(sorted({int(t) for t in top}))
    if not values or values[0] < 1:
        raise OptionError(f"--top sizes must be positive integers, got {list(top)}")
    return values


def similarity(
    base: str | Path,
    tuned_a: str | Path,
    tuned_b: str | Path,
    *,
    top: Sequence[int] = DEFAULT_TOP,
    side: str = "left",
    include: str | None = None,
    exclude: str | None = None,
    device: str = "auto",
    precision: str = "float32",
    progress: ProgressHook | None = None,
    allow_different_base: bool = False,
) -> SimilarityResult:
    """Subspace similarity φ(i, j) between ΔW_A = A − BASE and ΔW_B = B − BASE for every shared matrix.

    φ(A, B, i, j) = ‖U_Aᵢᵀ U_Bⱼ‖_F² / min(i, j) (LoRA paper §7), U_Aᵢ the top-i singular vectors of ΔW_A.

    Args:
        base: Base checkpoint (.safetensors file, Hugging Face directory or GGUF).
        tuned_a: First tuned checkpoint or PEFT LoRA/DoRA adapter directory (e.g. full fine-tuning).
        tuned_b: Second one (e.g. LoRA, or another seed).
        top: Subspace sizes i and j of the grid, clipped per matrix to the available vectors.
        side: left (output space, the default) or right (input space) singular vectors.
        include: Regex of tensor names instead of the default (transformer-block 2-D weights).
        exclude: Regex of tensor names to leave out.
        device: auto, cpu or cuda.
        precision: float32 or float64.
        progress: Called as progress(done, total, name) after each matrix.
        allow_different_base: Compare a TUNED whose config describes another architecture (else refused).

    Returns:
        A SimilarityResult with one MatrixSimilarity per matrix that both deltas change.
    """
    sizes = check_tops(top)
    if side not in SIDES:
        raise OptionError(f"unknown side {side!r} (left or right)")
    dev, dtype = resolve_device(device), resolve_precision(precision)
    base_source, (plan_a, plan_b) = plan_run(
        base,
        [tuned_a, tuned_b],
        Selection(include=include, exclude=exclude),
        allow_different_base=allow_different_base,
    )
    common, skipped = _match(plan_a, plan_b)
    jobs = [(plan, pair) for pair_a, pair_b in common for plan, pair in ((plan_a, pair_a), (plan_b, pair_b))]

    def load(job: tuple[Plan, Pair]) -> LoadedPair:
        return load_pair(job[1], base_source, job[0].source, dev)

    records = []
    with prefetched(jobs, load) as stream:
        for index, (pair, _) in enumerate(common):
            # The thin SVD of each delta; the loaded tensors are not kept.
            first, second = delta_svd(next(stream).delta(dtype)), delta_svd(next(stream).delta(dtype))
            record = _compare(pair, first, second, sizes, side)
            if isinstance(record, SkippedTensor):
                skipped.append(record)
            else:
                records.append(record)
            if progress is not None:
                progress(index + 1, len(common), pair.name)
    if not records:
        raise DeltarankError("no matrix is changed by both tuned models: nothing to compare")
    return SimilarityResult(
        base=str(base),
        tuned_a=str(tuned_a),
        tuned_b=str(tuned_b),
        side=side,
        top=sizes,
        device=str(dev),
        precision=precision,
        matrices=tuple(records),
        skipped=tuple(skipped),
        deltarank_version=__version__,
    )


def _match(plan_a: Plan, plan_b: Plan) -> tuple[list[tuple[Pair, Pair]], list[SkippedTensor]]:
    """Pairs of both plans with the same name (in A's order), and what only one of them has."""
    by_b = plan_b.by_name()
    common = [(pair, by_b[pair.name]) for pair in plan_a.pairs if pair.name in by_b]
    names_a = {pair.name for pair in plan_a.pairs}
    skipped = [SkippedTensor(s.name, f"A: {s.reason}") for s in plan_a.skipped]
    skipped += [SkippedTensor(s.name, f"B: {s.reason}") for s in plan_b.skipped]
    skipped += [SkippedTensor(p.name, "only in A") for p in plan_a.pairs if p.name not in by_b]
    skipped += [SkippedTensor(p.name, "only in B") for p in plan_b.pairs if p.name not in names_a]
    if not common:
        raise DeltarankError(f"{plan_a.tuned_path} and {plan_b.tuned_path} change no matrix in common")
    return common, skipped


def _compare(
    pair: Pair, svd_a: DeltaSVD, svd_b: DeltaSVD, sizes: tuple[int, ...], side: str
) -> MatrixSimilarity | SkippedTensor:
    """The φ record of one matrix from the two deltas' SVDs (a zero delta is skipped)."""
    avail_a, avail_b = svd_a.significant(pair.shape), svd_b.significant(pair.shape)
    if avail_a == 0 or avail_b == 0:
        return SkippedTensor(pair.name, f"ΔW of {'A' if avail_a == 0 else 'B'} is zero")
    tops_a, tops_b = clip_tops(sizes, avail_a), clip_tops(sizes, avail_b)
    vec_a = svd_a.u if side == "left" else svd_a.v  # (m, ·) or (n, ·)
    vec_b = svd_b.u if side == "left" else svd_b.v
    grid, diagonal = phi_grid(vec_a[:, : tops_a[-1]], vec_b[:, : tops_b[-1]], tops_a, tops_b)
    return MatrixSimilarity(
        name=pair.name,
        layer=layer_index(pair.name),
        module=module_type(pair.name),
        shape=pair.shape,
        kind_a=svd_a.kind,
        kind_b=svd_b.kind,
        available_a=avail_a,
        available_b=avail_b,
        tops_a=tops_a,
        tops_b=tops_b,
        grid=grid,
        diagonal=diagonal,
    )
