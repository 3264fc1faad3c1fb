"""Where a study's runs execute: one after another (default), side by side in local processes (`--jobs N`), or
as Ray tasks (`--executor ray --address ADDR|auto|local`).

A task is a pure function of its arguments to files in the study directory (`deltarank.study.run.runner`'s
`measure_base_task` and `run_task`), so every executor gives the same results. A study hands its tasks over in
waves (the base measurements, then the runs without a parent, then their children, ...) and the next wave
starts when one has finished; within a wave the engine schedules. On Ray every node must see the study
directory (a shared file system) and the model and data the runs name.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from deltarank.errors import DeltarankError
from deltarank.io import console

EXECUTORS = ("local", "ray")
Task = tuple[Callable[..., Any], tuple[Any, ...]]


class Executor(Protocol):
    """Runs a wave of independent tasks and returns their results in order (raising the first failure)."""

    def run_wave(self, tasks: Sequence[Task]) -> list[Any]: ...

    def close(self) -> None: ...


class SequentialExecutor:
    """The tasks one after another, in this process (the default)."""

    def run_wave(self, tasks: Sequence[Task]) -> list[Any]:
        return [function(*args) for function, args in tasks]

    def close(self) -> None:
        return None


class ProcessExecutor:
    """`jobs` local processes (spawned: no state shared with this one), each with cores // jobs torch threads."""

    def __init__(self, jobs: int) -> None:
        threads = max(1, (os.cpu_count() or 1) // jobs)
        self.pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=jobs,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=init_worker,
            initargs=(threads, console.installed()),
        )

    def run_wave(self, tasks: Sequence[Task]) -> list[Any]:
        futures = [self.pool.submit(function, *args) for function, args in tasks]
        return _results(futures)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def init_worker(threads: int, quiet_console: bool) -> None:
    """A worker process: its torch threads, and the console filters when the parent has them (the CLI's)."""
    if quiet_console:
        console.install()
    set_threads(threads)


def set_threads(threads: int) -> None:
    """A worker process's torch (intra-op) threads."""
    import torch

    torch.set_num_threads(threads)


def _results(futures: Sequence[concurrent.futures.Future[Any]]) -> list[Any]:
    """Every future's result once all are done; the first failure (in task order) is raised."""
    concurrent.futures.wait(futures)
    for future in futures:
        error = future.exception()
        if error is not None:
            raise error
    return [f.result() for f in futures]


class RayExecutor:
    """One Ray task per run on a cluster (`address`: host:port or `auto`) or a local instance (`local`).

    An already initialised Ray (a test's `ray.init(num_cpus=2)`, a Ray job's driver) is used as it is. With
    `gpus_per_task` each task asks Ray for that many GPUs (`--device cuda`).
    """

    def __init__(self, address: str = "local", gpus_per_task: float = 0.0) -> None:
        try:
            import ray
        except ModuleNotFoundError:
            raise DeltarankError("--executor ray needs Ray: pip install 'deltarank[ray]'") from None
        self.ray = ray
        self.owned = not ray.is_initialized()
        if self.owned:
            try:
                ray.init(address=None if address == "local" else address, include_dashboard=False)
            except (ConnectionError, ValueError, RuntimeError) as exc:
                raise DeltarankError(f"--address {address}: cannot connect to Ray ({exc})") from exc
        self.gpus = gpus_per_task

    def run_wave(self, tasks: Sequence[Task]) -> list[Any]:
        remote = self.ray.remote(num_cpus=1, num_gpus=self.gpus, max_retries=0)(_call)
        refs = [remote.remote(function, args) for function, args in tasks]
        try:
            return list(self.ray.get(refs))
        except self.ray.exceptions.RayTaskError as exc:
            cause = exc.as_instanceof_cause()
            raise cause from None

    def close(self) -> None:
        if self.owned:
            self.ray.shutdown()


def _call(function: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    """A Ray task: the task's function, with torch's threads set to the CPUs Ray gave it."""
    import ray

    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
    set_threads(max(1, int(cpus)))
    return function(*args)


def make_executor(
    executor: str = "local", jobs: int = 1, address: str = "local", device: str = "auto"
) -> Executor:
    """The executor the command line asks for (`--executor`, `--jobs`, `--address`, `--device`).

    Raises:
        DeltarankError: an unknown executor, `--jobs` below 1, or Ray missing or unreachable.
    """
    if executor not in EXECUTORS:
        raise DeltarankError(f"--executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    if jobs < 1:
        raise DeltarankError(f"--jobs must be at least 1, got {jobs}")
    if executor == "ray":
        return RayExecutor(address, gpus_per_task=1.0 if device.startswith("cuda") else 0.0)
    return ProcessExecutor(jobs) if jobs > 1 else SequentialExecutor()
