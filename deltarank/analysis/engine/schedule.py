"""How many CPU decompositions run at once, and on how many BLAS threads each.

The CPU Gram solver spends most of its time in LAPACK's tridiagonal reduction, half of which is matrix-vector
work that scales poorly over threads. Several matrices decomposed side by side, each on one thread, keep the
cores busier than one matrix on all of them (2-core AMD EPYC, NumPy's OpenBLAS, 1024 × 2816: 95 ms per matrix
on 2 threads, 73 ms per matrix with two single-thread decompositions running at once; `benchmarks/
solver_shapes.py`). The workers run NumPy, which releases the GIL inside BLAS and LAPACK.

Each worker holds one delta and its Gram matrix, so the number of workers is capped (`MAX_WORKERS`): memory
stays a small constant multiple of one tensor pair whatever the model size. Leftover cores go to BLAS threads.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from threadpoolctl import threadpool_limits

from deltarank.errors import OptionError

MAX_WORKERS = 4


@dataclass(frozen=True)
class CpuSchedule:
    """Concurrent decompositions (`workers`) and the BLAS threads each one uses (`blas_threads`)."""

    workers: int
    blas_threads: int


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, which container limits also set)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def cpu_schedule(workers: int | None = None, cores: int | None = None) -> CpuSchedule:
    """The schedule for `cores` cores (default: the available ones), `workers` of them unless given.

    Args:
        workers: Concurrent decompositions; None picks min(cores, MAX_WORKERS).
        cores: Cores to share out; None reads the process's CPU affinity.
    """
    cores = cores or available_cores()
    if workers is not None and workers < 1:
        raise OptionError(f"--workers must be at least 1, got {workers}")
    count = workers or min(cores, MAX_WORKERS)
    return CpuSchedule(workers=count, blas_threads=max(1, cores // count))


@contextmanager
def applied(schedule: CpuSchedule) -> Iterator[None]:
    """Run with the schedule's BLAS threads and torch at one intra-op thread; both restored after.

    torch has no decomposition to do on this path (the Gram solver runs in NumPy), and its idle OpenMP
    workers, spinning between ops, would take cores from the BLAS threads.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=schedule.blas_threads, user_api="blas"):
            yield
    finally:
        torch.set_num_threads(before)
