"""Subspace similarity of two weight deltas (Hu et al. 2021, LoRA paper §7).

φ(A, B, i, j) = ‖U_Aᵢᵀ U_Bⱼ‖_F² / min(i, j) ∈ [0, 1], where U_Aᵢ holds the top-i left singular vectors of ΔW_A
(right ones with side="right"). φ = 1 when one subspace contains the other, 0 when they are orthogonal; two
random subspaces of R^m give about max(i, j)/m. Compare full fine-tuning with LoRA, or two seeds, per matrix.

A LoRA delta's vectors come from its factors (QR of B and Aᵀ, an r × r SVD) without forming B·A. Only vectors
with a σ above the numerical cut-off count (those past it span an arbitrary subspace), so each side's sizes
are clipped to that count: i ∈ {min(t, available_A) : t ∈ top}. Memory: one pair plus the two vector sets.

With n ≥ 3 deltas (or `merge` settings with two), φ(i, j) still compares the first two, A and B, and the merge
geometry of all n is measured as well (`tools.merge`): the n × n overlap φ(k, k) at one size k (`phi_matrix`),
TIES's sign conflicts and DARE's errors. Each matrix is read name by name: the base tensor once and the n
tuned tensors one after the other (one pair read ahead), each delta formed in the compute dtype and kept
dense, its SVD cut to the k vectors the overlap needs. Memory: the n deltas, one pair read ahead, n × k
vectors, and the merge measures' buffers (`tools.merge`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import torch

from deltarank import __version__
from deltarank.analysis.engine.compute import ProgressHook, resolve_device, resolve_precision
from deltarank.analysis.engine.loading import Job, JobLoader, LoadedPair, prefetched
from deltarank.analysis.engine.plan import Plan, plan_run
from deltarank.analysis.maths.svd import DeltaSVD, delta_svd
from deltarank.analysis.results.merge import MergeGeometry, Table, module_merges
from deltarank.analysis.results.similarity import MatrixSimilarity, SimilarityResult
from deltarank.analysis.tools.merge import MergeSettings, check_merge, matrix_merge
from deltarank.errors import DeltarankError, OptionError
from deltarank.io.naming import Selection, layer_index, module_type
from deltarank.io.pairing import Pair, SkippedTensor

__all__ = [
    "MatrixSimilarity",
    "MergeSettings",
    "SimilarityResult",
    "overlap_energy",
    "pairwise_mean",
    "phi",
    "phi_grid",
    "phi_matrix",
    "present_mean",
    "similarity",
]

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


def phi_matrix(vectors: Sequence[torch.Tensor], k: int) -> Table:
    """n × n φ(k, k) = ‖U_aᵀ U_b‖_F² / k of the first k columns of each set of orthonormal vectors; the
    diagonal is 1 by definition.

    Shapes: n tensors (d, ≥ k) -> n rows of n values.
    """
    count = len(vectors)
    table = [[1.0] * count for _ in range(count)]
    for a in range(count):
        for b in range(a + 1, count):
            table[a][b] = table[b][a] = phi(vectors[a], vectors[b], k, k)
    return tuple(tuple(row) for row in table)


def present_mean(values: Iterable[float | None]) -> float | None:
    """Mean of the values that are not None (None when there is none)."""
    present = [float(v) for v in values if v is not None]
    return sum(present) / len(present) if present else None


def pairwise_mean(table: Table) -> float | None:
    """Mean over the pairs a ≠ b of an n × n table's entries that are not None (its off-diagonal mean): the
    mean pairwise overlap or sign conflict of a merge geometry."""
    return present_mean(v for a, row in enumerate(table) for b, v in enumerate(row) if a != b)


def delta_label(index: int) -> str:
    """A, B, C, … for the deltas in argument order (T27, T28, … past Z): skipped reasons name them so."""
    return chr(ord("A") + index) if index < 26 else f"T{index + 1}"


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
    *more: str | Path,
    top: Sequence[int] = DEFAULT_TOP,
    side: str = "left",
    merge: MergeSettings | None = None,
    include: str | None = None,
    exclude: str | None = None,
    device: str = "auto",
    precision: str = "float32",
    progress: ProgressHook | None = None,
    allow_different_base: bool = False,
) -> SimilarityResult:
    """Subspace similarity φ(i, j) between ΔW_A = A − BASE and ΔW_B = B − BASE for every shared matrix, and the
    merge geometry of all the deltas when there are three or more, or `merge` is given.

    φ(A, B, i, j) = ‖U_Aᵢᵀ U_Bⱼ‖_F² / min(i, j) (LoRA paper §7), U_Aᵢ the top-i singular vectors of ΔW_A.

    Args:
        base: Base checkpoint (.safetensors file, Hugging Face directory or GGUF).
        tuned_a: First tuned checkpoint or PEFT LoRA/DoRA adapter directory (e.g. full fine-tuning).
        tuned_b: Second one (e.g. LoRA, or another seed).
        *more: Further tuned checkpoints or adapters, for the merge geometry.
        top: Subspace sizes i and j of the grid, clipped per matrix to the available vectors.
        side: left (output space, the default) or right (input space) singular vectors.
        merge: Settings of the merge geometry; the defaults when None and there are three or more deltas.
        include: Regex of tensor names instead of the default (transformer-block 2-D weights).
        exclude: Regex of tensor names to leave out.
        device: auto, cpu or cuda.
        precision: float32 or float64.
        progress: Called as progress(done, total, name) after each matrix.
        allow_different_base: Compare a TUNED whose config describes another architecture (else refused).

    Returns:
        A SimilarityResult with one MatrixSimilarity per matrix that every delta changes.
    """
    sizes = check_tops(top)
    if side not in SIDES:
        raise OptionError(f"unknown side {side!r} (left or right)")
    tuned = [tuned_a, tuned_b, *more]
    settings = check_merge(merge or MergeSettings()) if merge is not None or more else None
    dev, dtype = resolve_device(device), resolve_precision(precision)
    base_source, plans = plan_run(
        base, tuned, Selection(include=include, exclude=exclude), allow_different_base=allow_different_base
    )
    common, skipped = _match(plans)
    loader = JobLoader(base_source, [plan.source for plan in plans], dev)  # each base tensor read once
    jobs = [Job(index, pair) for pairs in common for index, pair in enumerate(pairs)]

    records = []
    with prefetched(jobs, loader) as stream:
        for position, pairs in enumerate(common):
            # The thin SVD of each delta; the loaded tensors are not kept, the dense deltas only for merging.
            deltas = _Deltas(stream, dtype, keep=settings is not None)
            first, second = deltas.decomposed(), deltas.decomposed()
            record = _compare(pairs[0], first, second, sizes, side)
            if settings is not None:
                record = _with_merge(pairs[0], record, [first, second], deltas, len(pairs), settings, side)
            del first, second, deltas
            if isinstance(record, SkippedTensor):
                skipped.append(record)
            else:
                records.append(record)
            if progress is not None:
                progress(position + 1, len(common), pairs[0].name)
    if not records:
        every = "both" if len(tuned) == 2 else "all the"
        raise DeltarankError(f"no matrix is changed by {every} tuned models: nothing to compare")
    return SimilarityResult(
        base=str(base),
        tuned_a=str(tuned_a),
        tuned_b=str(tuned_b),
        side=side,
        sizes=sizes,
        device=str(dev),
        precision=precision,
        matrices=tuple(records),
        skipped=tuple(skipped),
        deltarank_version=__version__,
        merge=None if settings is None else _geometry(tuned, settings, records),
    )


class _Deltas:
    """The deltas of one matrix taken from the stream in order: each decomposed, and kept dense with `keep`."""

    def __init__(self, stream: Iterator[LoadedPair], dtype: torch.dtype, keep: bool) -> None:
        self.stream, self.dtype, self.keep = stream, dtype, keep
        self.dense: list[torch.Tensor] = []

    def decomposed(self) -> DeltaSVD:
        """The thin SVD of the next delta (its dense form kept with `keep`)."""
        delta = next(self.stream).delta(self.dtype)
        if self.keep:
            self.dense.append(delta.dense())
        return delta_svd(delta)


def _with_merge(
    pair: Pair,
    record: MatrixSimilarity | SkippedTensor,
    svds: list[DeltaSVD],
    deltas: _Deltas,
    count: int,
    settings: MergeSettings,
    side: str,
) -> MatrixSimilarity | SkippedTensor:
    """The φ record of A and B with the merge geometry of all `count` deltas of one matrix added.

    `svds` holds A's and B's SVDs; the other deltas are taken from `deltas` (every one of them, even when the
    matrix is skipped, to keep the stream in step). Each SVD is cut to the k vectors the overlap needs.
    """
    cap = min(settings.k, *pair.shape)
    vectors, kinds, available = [], [], []
    for index in range(count):
        svd = svds[index] if index < len(svds) else deltas.decomposed()
        vectors.append((svd.u if side == "left" else svd.v)[:, :cap])  # (d, ≤ cap)
        kinds.append(svd.kind)
        available.append(svd.significant(pair.shape))
        del svd
    svds.clear()
    if isinstance(record, SkippedTensor):
        return record
    if 0 in available:
        return SkippedTensor(pair.name, f"ΔW of {delta_label(available.index(0))} is zero")
    k = min(cap, *available)
    geometry = matrix_merge(pair.name, deltas.dense, phi_matrix(vectors, k), k, kinds, available, settings)
    return replace(record, merge=geometry)


def _geometry(
    tuned: Sequence[str | Path], settings: MergeSettings, records: list[MatrixSimilarity]
) -> MergeGeometry:
    """The merge section of the result: the settings and the per-module medians."""
    measured = [(m.module, m.merge) for m in records if m.merge is not None]
    return MergeGeometry(
        tuned=tuple(str(path) for path in tuned),
        k=settings.k,
        density=settings.density,
        dare_drops=settings.drops,
        seed=settings.seed,
        modules=module_merges(measured),
    )


def _match(plans: Sequence[Plan]) -> tuple[list[tuple[Pair, ...]], list[SkippedTensor]]:
    """The pairs every plan has, by name (in A's order), and what only some of them have (`only in A, C`)."""
    labels = [delta_label(index) for index in range(len(plans))]
    names = [plan.by_name() for plan in plans]
    common = [
        (pair, *(others[pair.name] for others in names[1:]))
        for pair in plans[0].pairs
        if all(pair.name in others for others in names[1:])
    ]
    skipped = [
        SkippedTensor(s.name, f"{label}: {s.reason}")
        for label, plan in zip(labels, plans, strict=True)
        for s in plan.skipped
    ]
    reported = {pairs[0].name for pairs in common}
    for plan in plans:
        for pair in plan.pairs:
            if pair.name not in reported:
                reported.add(pair.name)
                holders = [label for label, found in zip(labels, names, strict=True) if pair.name in found]
                skipped.append(SkippedTensor(pair.name, f"only in {', '.join(holders)}"))
    if not common:
        paths = [plan.tuned_path for plan in plans]
        raise DeltarankError(f"{', '.join(paths[:-1])} and {paths[-1]} change no matrix in common")
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
