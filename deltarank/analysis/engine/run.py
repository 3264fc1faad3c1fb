"""The streaming spectrum run: `spectrum` and `spectrum_many`.

Plan the pairs of every tuned checkpoint against one base, then walk the base tensors in file order: each base
tensor is read once for all tuned checkpoints, the next pairs are read and their ΔW formed on a background
thread while earlier ones are decomposed (on CPU several at once, see `schedule`), and finished records go to
the optional resume cache. Peak memory is the deltas being decomposed and those read ahead (one of each per
worker), whatever the model size or number of checkpoints. Under torchrun, ranks share the base tensors
round-robin and rank 0 gathers.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from deltarank import __version__
from deltarank.analysis.engine.cache import RecordCache
from deltarank.analysis.engine.compute import ProgressHook
from deltarank.analysis.engine.distributed import World, gather, joined
from deltarank.analysis.engine.loading import Job, JobLoader, prefetched
from deltarank.analysis.engine.measure import MeasureSettings, measure_batch
from deltarank.analysis.engine.options import DEFAULT_THRESHOLDS, SpectrumOptions
from deltarank.analysis.engine.plan import Plan, plan_run
from deltarank.analysis.engine.schedule import applied, cpu_schedule
from deltarank.analysis.maths.arrays import LARGE_ENTRIES
from deltarank.analysis.maths.deltas import Delta
from deltarank.analysis.results.spectrum import MatrixSpectrum, SpectrumResult, different_base
from deltarank.errors import DeltarankError
from deltarank.io.base import TensorSource

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_THRESHOLDS", "SpectrumOptions", "spectrum", "spectrum_many"]

# Same-shape dense deltas decomposed together on CUDA (one batched kernel call).
CUDA_BATCH = 8
Resume = str | Path | RecordCache | None


def spectrum(
    base: str | Path,
    tuned: str | Path,
    options: SpectrumOptions | None = None,
    *,
    progress: ProgressHook | None = None,
    resume: Resume = None,
    **changes: Any,
) -> SpectrumResult:
    """The SVD spectrum and effective ranks of every selected weight delta ΔW = W_tuned − W_base.

    Read `result.warnings()` before trusting the ranks (low-precision storage, deltas at noise level, ...):
    the command line prints exactly those.

    Args:
        base: Base checkpoint: .safetensors file, Hugging Face directory (single or sharded) or GGUF file.
        tuned: Tuned checkpoint in any of those formats, or a PEFT LoRA/DoRA adapter directory.
        options: The run's `SpectrumOptions` (defaults when None).
        progress: Called as progress(done, total, name) after each matrix.
        resume: A directory for the resume cache: matrices finished by an earlier run with the same inputs
            and options are reused, finished ones are kept there if this run is interrupted, and the
            directory is removed when the run ends. A `RecordCache` instead leaves its removal to the caller.
        **changes: Any `SpectrumOptions` field (device=, precision=, include=, exclude=, thresholds=,
            solver=, top_k=, workers=, sparsity_atol=), overriding `options`.

    Returns:
        A SpectrumResult with one MatrixSpectrum per analysed matrix (on rank 0 under torchrun).

    Raises:
        DeltarankError: bad input or options (the resume cache is then removed).
        KeyboardInterrupt: interrupted; its message says how many finished matrices the cache keeps.
    """
    results = spectrum_many(base, [tuned], options, progress=progress, resume=resume, **changes)
    return results[0]


def spectrum_many(
    base: str | Path,
    tuned: Sequence[str | Path],
    options: SpectrumOptions | None = None,
    *,
    progress: ProgressHook | None = None,
    resume: Resume = None,
    **changes: Any,
) -> list[SpectrumResult]:
    """`spectrum` for several tuned checkpoints of one base, reading each base tensor once for all of them.

    Returns one SpectrumResult per tuned checkpoint, in order (an empty list on ranks other than 0).
    """
    opts = SpectrumOptions.of(options, **changes)
    device = opts.compute_device()
    settings = opts.measure_settings(device)
    cache = resume if isinstance(resume, RecordCache) or resume is None else None
    if isinstance(resume, str | Path):
        cache = RecordCache(Path(resume), opts.fingerprint(base, tuned))
    try:
        base_source, plans = plan_run(
            base,
            tuned,
            opts.selection,
            opts.quantization_error,
            standalone=True,
            allow_different_base=opts.allow_different_base,
        )
        with joined(device) as world:
            records = _run(base_source, plans, device, settings, world, progress, cache, opts.workers)
            gathered = gather(records, world)
    except DeltarankError:
        if cache is not None and not cache.preexisting:
            cache.remove()  # bad input: nothing worth resuming, leave no trace (an earlier run's cache stays)
        raise
    except KeyboardInterrupt:
        raise KeyboardInterrupt(_interrupted(cache)) from None
    if cache is not None and cache is not resume:
        cache.remove()  # the library's own cache: the run is finished
    if gathered is None:
        return []
    results = []
    for index, plan in enumerate(plans):
        matrices = _in_plan_order(plan, [r for t, r in gathered if t == index])
        results.append(
            SpectrumResult(
                base=str(base),
                tuned=plan.tuned_path,
                device=str(device),
                precision=opts.precision,
                thresholds=opts.thresholds,
                matrices=matrices,
                skipped=plan.skipped,
                method="randomized" if settings.solver == "randomized" else "exact",
                solver=settings.solver,
                deltarank_version=__version__,
                different_base=different_base(matrices),
                sparsity_atol=opts.sparsity_atol,
                resumed=cache.reused if cache is not None else 0,
            )
        )
    return results


def _interrupted(cache: RecordCache | None) -> str:
    """What an interrupted run says: nothing written, and what a resumed run will reuse."""
    finished = cache.finished() if cache is not None else 0
    if cache is None or not finished:
        return "interrupted; no output was written"
    return (
        f"interrupted; no output was written; {finished} finished matrices are kept in {cache.directory} "
        "for a rerun with --resume"
    )


def _jobs(plans: list[Plan], world: World) -> list[Job]:
    """Jobs grouped by base tensor (base file order), this rank's share of the groups only."""
    by_key: dict[str, list[Job]] = {}
    for index, plan in enumerate(plans):
        for pair in plan.pairs:
            by_key.setdefault(pair.base_key, []).append(Job(index, pair))
    # Insertion order is the base file order (plans list pairs in base order).
    return [job for g, jobs in enumerate(by_key.values()) if world.owns(g) for job in jobs]


def _run(
    base: TensorSource,
    plans: list[Plan],
    device: torch.device,
    settings: MeasureSettings,
    world: World,
    progress: ProgressHook | None,
    cache: RecordCache | None,
    workers: int | None = None,
) -> list[tuple[int, MatrixSpectrum]]:
    """Measure this rank's jobs, reusing cached records; returns (tuned index, record) pairs.

    Pairs are read in order on the prefetch thread and measured on a pool of `workers` threads (one on
    CUDA, where same-shape deltas are batched instead; see `deltarank.analysis.engine.schedule` for the CPU).
    """
    jobs = _jobs(plans, world)
    if cache is not None:
        cache.total = len(jobs)  # the manifest says how far a killed run got (12/30)
    done: list[tuple[int, MatrixSpectrum]] = []
    todo = []
    for job in jobs:
        cached = cache.get(job.tuned_index, job.pair.name) if cache else None
        if cached is not None:
            done.append((job.tuned_index, cached))
        else:
            todo.append(job)
    loader = JobLoader(base, [plan.source for plan in plans], device)
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

    # ΔW is formed on the reader thread; the raw tensors are dropped there.
    # One delta read ahead per worker keeps small decompositions fed; large ones take far longer to decompose
    # than to read, so one read ahead suffices and saves a whole delta of memory.
    large = any(math.prod(job.pair.shape) > LARGE_ENTRIES for job in todo)
    reader = prefetched(
        todo,
        lambda job: (job, loader(job).delta(settings.dtype, settings.sparsity_atol)),
        depth=1 if large else width,
    )
    threads = applied(schedule) if schedule else nullcontext()
    pool = ThreadPoolExecutor(width, thread_name_prefix="deltarank-measure")
    running: dict[Future[list[MatrixSpectrum]], list[Job]] = {}
    with threads, reader as loads, pool:
        try:
            for batch in _batches(loads, batch_size):
                future = pool.submit(measure_batch, [(job.pair, delta) for job, delta in batch], settings)
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


def _batches(items: Iterator[tuple[Job, Delta]], size: int) -> Iterator[list[tuple[Job, Delta]]]:
    """Consecutive same-shape items, at most `size` at a time.

    A full batch is yielded before the next item is pulled, so no loaded pair waits beyond the one prefetched.
    """
    batch: list[tuple[Job, Delta]] = []
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


def _in_plan_order(plan: Plan, records: list[MatrixSpectrum]) -> tuple[MatrixSpectrum, ...]:
    position = {pair.name: i for i, pair in enumerate(plan.pairs)}
    return tuple(sorted(records, key=lambda r: position[r.name]))
