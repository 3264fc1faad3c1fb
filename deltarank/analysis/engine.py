"""The streaming spectrum run.

Plan the pairs of every tuned checkpoint against one base, then walk the base tensors in file order: each base
tensor is read once for all tuned checkpoints, the next pairs are read on a background thread while earlier
ones are decomposed (on CPU several at once, see `deltarank.analysis.schedule`), and finished records go to the
optional resume cache. Peak memory is the pairs being decomposed and those read ahead (one of each per worker),
whatever the model size or number of checkpoints.
Under torchrun, ranks share the base tensors round-robin and rank 0 gathers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch

from deltarank import __version__
from deltarank.analysis.cache import RecordCache
from deltarank.analysis.distributed import World, gather, joined, local_device
from deltarank.analysis.loading import Job, JobLoader, load_pair, prefetched
from deltarank.analysis.measure import Loaded, MeasureSettings, measure_batch
from deltarank.analysis.results import MatrixSpectrum, SkippedTensor, SpectrumResult
from deltarank.analysis.schedule import applied, cpu_schedule
from deltarank.analysis.solvers import resolve_solver
from deltarank.errors import DeltarankError
from deltarank.io.adapter import AdapterSource
from deltarank.io.naming import Selection
from deltarank.io.pairing import Pair, plan_checkpoint
from deltarank.io.source import TensorSource, open_checkpoint

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_THRESHOLDS", "load_pair", "spectrum", "spectrum_many"]

DEFAULT_THRESHOLDS = (0.5, 0.9, 0.99)
PRECISIONS = {"float32": torch.float32, "float64": torch.float64}
# Same-shape dense deltas decomposed together on CUDA (one batched kernel call).
CUDA_BATCH = 8
ProgressHook = Callable[[int, int, str], None]


def resolve_device(device: str) -> torch.device:
    """`auto` -> CUDA when present, else CPU; `cuda` without CUDA is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise DeltarankError("--device cuda asked for, but no CUDA device is available")
    if device != "cpu" and not device.startswith("cuda"):
        raise DeltarankError(f"unknown device {device!r} (auto, cpu or cuda)")
    return torch.device(device)


def check_thresholds(thresholds: Sequence[float]) -> tuple[float, ...]:
    """Energy thresholds must lie in (0, 1]; returned sorted and de-duplicated."""
    values = tuple(sorted({float(t) for t in thresholds}))
    if not values or any(not 0.0 < t <= 1.0 for t in values):
        raise DeltarankError(f"energy thresholds must lie in (0, 1], got {list(thresholds)}")
    return values


@dataclass
class _Plan:
    """Pairs and skipped tensors of one tuned checkpoint."""

    tuned: str
    source: TensorSource | AdapterSource
    pairs: Sequence[Pair]
    skipped: list[SkippedTensor]


def spectrum(
    base: str | Path,
    tuned: str | Path,
    *,
    device: str = "auto",
    precision: str = "float32",
    include: str | None = None,
    exclude: str | None = None,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    solver: str = "auto",
    top_k: int | None = None,
    progress: ProgressHook | None = None,
    cache: RecordCache | None = None,
    workers: int | None = None,
) -> SpectrumResult:
    """The SVD spectrum and effective ranks of every selected weight delta ΔW = W_tuned − W_base.

    Args:
        base: Base checkpoint: .safetensors file, Hugging Face directory (single or sharded) or GGUF file.
        tuned: Tuned checkpoint in any of those formats, or a PEFT LoRA/DoRA adapter directory.
        device: auto, cpu or cuda.
        precision: float32 or float64; both tensors are upcast to it before subtracting.
        include: Regex of tensor names to analyse instead of the default (transformer-block 2-D weights).
        exclude: Regex of tensor names to leave out.
        thresholds: Energy thresholds τ of the energy ranks (keys `energy_<percent>`).
        solver: auto, svd, gram (exact) or randomized (approximate top-k, needs `top_k`).
        top_k: Number of singular values for the randomized solver.
        progress: Called as progress(done, total, name) after each matrix.
        cache: Resume cache of finished matrices (see `deltarank.analysis.cache`).
        workers: CPU decompositions run at once by the Gram solver; None picks one per core, at most
            `deltarank.analysis.schedule.MAX_WORKERS` (each holds one delta and its Gram matrix).

    Returns:
        A SpectrumResult with one MatrixSpectrum per analysed matrix (on rank 0 under torchrun).
    """
    results = spectrum_many(
        base,
        [tuned],
        device=device,
        precision=precision,
        include=include,
        exclude=exclude,
        thresholds=thresholds,
        solver=solver,
        top_k=top_k,
        progress=progress,
        cache=cache,
        workers=workers,
    )
    return results[0]


def spectrum_many(
    base: str | Path,
    tuned: Sequence[str | Path],
    *,
    device: str = "auto",
    precision: str = "float32",
    include: str | None = None,
    exclude: str | None = None,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    solver: str = "auto",
    top_k: int | None = None,
    progress: ProgressHook | None = None,
    cache: RecordCache | None = None,
    workers: int | None = None,
) -> list[SpectrumResult]:
    """`spectrum` for several tuned checkpoints of one base, reading each base tensor once for all of them.

    Returns one SpectrumResult per tuned checkpoint, in order (an empty list on ranks other than 0).
    """
    if precision not in PRECISIONS:
        raise DeltarankError(f"unknown precision {precision!r} (float32 or float64)")
    if solver == "randomized" and not top_k:
        raise DeltarankError("the randomized solver needs --top-k K")
    taus = check_thresholds(thresholds)
    dev = local_device(resolve_device(device))
    settings = MeasureSettings(
        PRECISIONS[precision], taus, resolve_solver(solver, dev, PRECISIONS[precision]), top_k
    )
    base_source = open_checkpoint(base)
    plans = [_plan(base_source, str(t), Selection(include=include, exclude=exclude)) for t in tuned]
    with joined(dev) as world:
        records = _run(base_source, plans, dev, settings, world, progress, cache, workers)
        gathered = gather(records, world)
    if gathered is None:
        return []
    method = "randomized" if settings.solver == "randomized" else "exact"
    return [
        SpectrumResult(
            base=str(base),
            tuned=plan.tuned,
            device=str(dev),
            precision=precision,
            thresholds=taus,
            matrices=_in_plan_order(plan, [r for t, r in gathered if t == index]),
            skipped=tuple(plan.skipped),
            method=method,
            solver=settings.solver,
            deltarank_version=__version__,
        )
        for index, plan in enumerate(plans)
    ]


def _plan(base: TensorSource, tuned: str, selection: Selection) -> _Plan:
    source, pairs, skipped = plan_checkpoint(base, tuned, selection)
    for item in skipped:
        log.warning("%s: skipped %s: %s", tuned, item.name, item.reason)
    return _Plan(tuned, source, pairs, skipped)


def _jobs(plans: list[_Plan], world: World) -> list[Job]:
    """Jobs grouped by base tensor (base file order), this rank's share of the groups only."""
    by_key: dict[str, list[Job]] = {}
    for index, plan in enumerate(plans):
        for pair in plan.pairs:
            by_key.setdefault(pair.base_key, []).append(Job(index, pair))
    # Insertion order is the base file order (plans list pairs in base order).
    return [job for g, jobs in enumerate(by_key.values()) if world.owns(g) for job in jobs]


def _run(
    base: TensorSource,
    plans: list[_Plan],
    device: torch.device,
    settings: MeasureSettings,
    world: World,
    progress: ProgressHook | None,
    cache: RecordCache | None,
    workers: int | None = None,
) -> list[tuple[int, MatrixSpectrum]]:
    """Measure this rank's jobs, reusing cached records; returns (tuned index, record) pairs.

    Pairs are read in order on the prefetch thread and measured on a pool of `workers` threads (one on
    CUDA, where same-shape deltas are batched instead; see `deltarank.analysis.schedule` for the CPU).
    """
    jobs = _jobs(plans, world)
    done: list[tuple[int, MatrixSpectrum]] = []
    todo = []
    for job in jobs:
        cached = cache.get(job.tuned_index, job.pair.name) if cache else None
        if cached is not None:
            done.append((job.tuned_index, cached))
        else:
            todo.append(job)
    loader = JobLoader(base, [plan.source for plan in plans], device, settings.dtype)
    batch_size = CUDA_BATCH if device.type == "cuda" else 1
    # Several decompositions at once only for the CPU Gram solver (NumPy: BLAS threads set, GIL released).
    schedule = cpu_schedule(workers) if device.type == "cpu" and settings.solver == "gram" else None
    width = schedule.workers if schedule else 1

    def finish(batch: list[Job], records: list[MatrixSpectrum]) -> None:
        for job, record in zip(batch, records, strict=True):
            if cache is not None:
                cache.put(job.tuned_index, record)
            done.append((job.tuned_index, record))
            if progress is not None and world.is_main:
                progress(len(done), len(jobs), record.name)

    reader = prefetched(todo, lambda job: (job, loader(job)), depth=width)
    threads = applied(schedule) if schedule else nullcontext()
    pool = ThreadPoolExecutor(width, thread_name_prefix="deltarank-measure")
    running: dict[Future[list[MatrixSpectrum]], list[Job]] = {}
    with threads, reader as loads, pool:
        try:
            for batch in _batches(loads, batch_size):
                future = pool.submit(measure_batch, [loaded for _, loaded in batch], settings)
                running[future] = [job for job, _ in batch]
                del batch  # only the worker holds the tensors now: they go as soon as it is done
                while len(running) >= width:
                    finished, _ = wait(running, return_when=FIRST_COMPLETED)
                    for future in finished:
                        finish(running.pop(future), future.result())
            for future in list(running):  # in submission order
                finish(running.pop(future), future.result())
        except BaseException:
            # Interrupted or failed: let the running decompositions end and keep every finished record (the
            # resume cache offers them to a rerun), then re-raise.
            pool.shutdown(wait=True, cancel_futures=True)
            for future, batch_jobs in running.items():
                if not future.cancelled() and future.exception() is None:
                    finish(batch_jobs, future.result())
            raise
    return done


def _batches(items: Iterator[tuple[Job, Loaded]], size: int) -> Iterator[list[tuple[Job, Loaded]]]:
    """Consecutive same-shape items, at most `size` at a time.

    A full batch is yielded before the next item is pulled, so no loaded pair waits beyond the one prefetched.
    """
    batch: list[tuple[Job, Loaded]] = []
    for item in items:
        if batch and batch[-1][0].pair.shape != item[0].pair.shape:
            yield batch
            batch = []
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _in_plan_order(plan: _Plan, records: list[MatrixSpectrum]) -> tuple[MatrixSpectrum, ...]:
    position = {pair.name: i for i, pair in enumerate(plan.pairs)}
    return tuple(sorted(records, key=lambda r: position[r.name]))
