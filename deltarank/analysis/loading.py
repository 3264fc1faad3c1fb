"""Reading the pairs of a run, in order, on a background thread ahead of the decompositions.

A `JobLoader` keeps the last base tensor it read, so consecutive jobs on the same base weight (one per tuned
checkpoint) read it once. A single thread reads, in order, at most `depth` pairs ahead of the decompositions.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing, contextmanager
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import TypeVar

import torch

from deltarank.analysis.host import all_finite
from deltarank.analysis.measure import DenseStats, Loaded, LoadedAdapter, LoadedDense, dense_stats
from deltarank.analysis.noise import storage_noise
from deltarank.errors import InputError
from deltarank.io.adapter import AdapterSource
from deltarank.io.pairing import AdapterPair, DensePair, Pair
from deltarank.io.source import TensorSource

JobT = TypeVar("JobT")
OutT = TypeVar("OutT")


@dataclass(frozen=True)
class Job:
    """One delta to measure: a pair of tuned checkpoint number `tuned_index`."""

    tuned_index: int
    pair: Pair


class JobLoader:
    """Reads jobs' tensors, holding only the most recent base tensor for reuse."""

    def __init__(
        self,
        base: TensorSource,
        tuned: Sequence[TensorSource | AdapterSource],
        device: torch.device,
        dtype: torch.dtype | None = None,
    ) -> None:
        self.base, self.tuned, self.device, self.dtype = base, tuned, device, dtype
        self._base_key: str | None = None
        self._base_tensor: torch.Tensor | None = None

    def base_tensor(self, key: str) -> torch.Tensor:
        """The base tensor `key`, read once for consecutive jobs on it."""
        if key != self._base_key or self._base_tensor is None:
            self._base_tensor = None  # drop the old one before reading the new one
            self._base_tensor = _to(_checked(self.base.read(key), self.base, key), self.device)
            self._base_key = key
        return self._base_tensor

    def __call__(self, job: Job) -> Loaded:
        return load_pair(
            job.pair, self.base, self.tuned[job.tuned_index], self.device, self.base_tensor, self.dtype
        )


def load_pair(
    pair: Pair,
    base: TensorSource,
    tuned: TensorSource | AdapterSource,
    device: torch.device,
    read_base: object = None,
    dtype: torch.dtype | None = None,
) -> Loaded:
    """Read one pair in its stored dtypes, check it is finite, and move it to the compute device.

    With `dtype` (the compute dtype), a dense pair also gets its `DenseStats` here, on the loader thread: the
    noise figures from the tuned tensor in host memory and, when the compute device is the CPU, ΔW itself.

    Args:
        pair: What to read.
        base: Base checkpoint.
        tuned: Tuned checkpoint or adapter.
        device: Compute device.
        read_base: Optional callable key -> base tensor (on `device`) to share base reads.
        dtype: Compute dtype; None leaves the figures to `measure`.
    """
    get_base = (
        read_base if callable(read_base) else (lambda key: _to(_checked(base.read(key), base, key), device))
    )
    if isinstance(pair, DensePair):
        assert not isinstance(tuned, AdapterSource)
        tuned_t = _checked(tuned.read(pair.tuned_key), tuned, pair.tuned_key)
        base_t = get_base(pair.base_key)
        stats = None
        if dtype is not None and device.type == "cpu":
            stats = dense_stats(base_t, tuned_t, pair.tuned_dtype, dtype)
        elif dtype is not None:
            stats = DenseStats(storage_noise(tuned_t, pair.tuned_dtype))
        return LoadedDense(pair, base_t, _to(tuned_t, device), stats)
    assert isinstance(pair, AdapterPair) and isinstance(tuned, AdapterSource)
    b, a, magnitude = tuned.read_factors(pair.name)
    for label, factor in (("lora_B", b), ("lora_A", a), ("magnitude", magnitude)):
        if factor is not None:
            _checked(factor, tuned, f"{pair.name} ({label})")
    return LoadedAdapter(
        pair,
        _to(b, device),
        _to(a, device),
        None if magnitude is None else _to(magnitude, device),
        get_base(pair.base_key) if pair.dora else None,
    )


@contextmanager
def prefetched(
    jobs: Sequence[JobT], read: Callable[[JobT], OutT], depth: int = 1
) -> Iterator[Iterator[OutT]]:
    """`with prefetched(jobs, read) as items:` yields `read(job)` for each job in order, read on a background
    thread up to `depth` jobs ahead of the caller.

    The reader thread is stopped when the block ends, on the calling thread, even on an error. (Left to the
    garbage collector, its blocking shutdown could run on any thread, such as one starting up while it holds
    threading's own locks: an interrupted run hung that way.)
    """
    with closing(_read_ahead(jobs, read, depth)) as items:
        yield items


def _read_ahead(
    jobs: Sequence[JobT], read: Callable[[JobT], OutT], depth: int
) -> Generator[OutT, None, None]:
    if not jobs:
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="deltarank-prefetch") as pool:
        ahead = iter(jobs)
        pending: deque[Future[OutT]] = deque(pool.submit(read, job) for job in islice(ahead, max(depth, 1)))
        while pending:
            item = pending.popleft().result()
            for nxt in islice(ahead, 1):
                pending.append(pool.submit(read, nxt))
            try:
                yield item
            except BaseException:
                for future in pending:
                    future.cancel()
                raise
            finally:
                del item


def _checked(tensor: torch.Tensor, source: TensorSource | AdapterSource, name: str) -> torch.Tensor:
    """Refuse tensors holding NaN or Inf, naming them."""
    if tensor.is_floating_point() and not all_finite(tensor):
        raise InputError(_file_of(source, name), f"tensor {name!r} contains NaN or Inf")
    return tensor


def _file_of(source: TensorSource | AdapterSource, name: str) -> Path:
    """The file holding a tensor: the shard of a sharded checkpoint, the weights file of an adapter."""
    if isinstance(source, AdapterSource):
        return source.weights_path
    try:
        return source.info(name).file
    except KeyError:
        return source.path


def _to(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Move to the compute device; pinned host memory and a non-blocking copy on CUDA."""
    if device.type == "cpu":
        return tensor
    return tensor.pin_memory().to(device, non_blocking=True)
