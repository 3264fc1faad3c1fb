"""Reading pairs from disk: checked, on the compute device, in order, on a background thread.

`load_pair` reads the tensors one pair needs (stored dtypes, NaN/Inf refused) into a `LoadedPair`, whose
`delta()` forms ΔW by the form of its kind (`deltarank.analysis.maths.deltas`) and, when asked, counts its
unchanged entries (`deltarank.analysis.maths.sparsity`). A `JobLoader` keeps the last base tensor it read, so
consecutive jobs on the same base weight (one per tuned checkpoint) read it once.
`prefetched` runs a reader over a list of jobs on one thread, at most `depth` jobs ahead of the caller.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing, contextmanager
from dataclasses import dataclass, replace
from itertools import islice
from pathlib import Path
from typing import TypeVar

import torch

from deltarank.analysis.maths.arrays import all_finite
from deltarank.analysis.maths.deltas import Delta, DeltaInputs, form_delta
from deltarank.analysis.maths.sparsity import count_unchanged
from deltarank.errors import InputError
from deltarank.io.adapter import AdapterSource
from deltarank.io.base import TensorSource
from deltarank.io.pairing import AdapterPair, DensePair, Pair, QuantizationPair
from deltarank.io.standalone import StandaloneAdapter, StoredMatrix

JobT = TypeVar("JobT")
OutT = TypeVar("OutT")
BaseReader = Callable[[str], torch.Tensor]
Source = TensorSource | AdapterSource | StandaloneAdapter


@dataclass
class LoadedPair:
    """The stored tensors of one pair, named by role (`base`, `tuned`, `lora_A`, `lora_B`, `magnitude`, and the
    other methods' saved parameter names, see `deltarank.io.peft_methods`)."""

    pair: Pair
    tensors: dict[str, torch.Tensor]

    @property
    def base(self) -> torch.Tensor | None:
        """The base weight, when it was read."""
        return self.tensors.get("base")

    def delta(self, dtype: torch.dtype, sparsity_atol: float | None = None) -> Delta:
        """ΔW in the compute dtype, by the form of the pair's kind; with `sparsity_atol`, also its entry counts
        (exact zeros, within the tolerance, within the base's storage rounding: `maths.sparsity`), taken here
        while the stored base weight is still at hand. A standalone adapter's own matrix is no delta: no counts.
        """
        delta = form_delta(self.tensors, delta_inputs(self.pair), dtype)
        if sparsity_atol is None or isinstance(self.pair, StoredMatrix):
            return delta
        counts = count_unchanged(delta.dense_rows(), self.base, self.pair.base_dtype, sparsity_atol)
        return replace(delta, counts=counts)


def delta_inputs(pair: Pair) -> DeltaInputs:
    """What the delta form of a pair needs besides its tensors."""
    if isinstance(pair, DensePair):
        return DeltaInputs(pair.kind, pair.tuned_dtype)
    if isinstance(pair, StoredMatrix):
        return DeltaInputs(pair.kind, pair.tuned_dtype, shape=pair.shape, columns=pair.columns)
    if isinstance(pair, QuantizationPair):
        if pair.adapter is None:
            return DeltaInputs(
                pair.kind,
                pair.tuned_dtype,
                fan_in_fan_out=pair.fan_in_fan_out,
                shape=pair.shape,
                quantization=pair.quantization,
            )
        inner = delta_inputs(pair.adapter)
        return replace(inner, kind=pair.kind, quantization=pair.quantization, adapter_kind=pair.adapter.kind)
    module = pair.module
    return DeltaInputs(
        pair.kind,
        pair.tuned_dtype,
        module.scale,
        pair.fan_in_fan_out,
        pair.shape,
        dict(module.options),
        pair.quantization,
    )


@dataclass(frozen=True)
class Job:
    """One delta to measure: a pair of tuned checkpoint number `tuned_index`."""

    tuned_index: int
    pair: Pair


class JobLoader:
    """Reads jobs' tensors, holding only the most recent base tensor for reuse."""

    def __init__(self, base: TensorSource, tuned: Sequence[Source], device: torch.device) -> None:
        self.base, self.tuned, self.device = base, tuned, device
        self._base_key: str | None = None
        self._base_tensor: torch.Tensor | None = None

    def base_tensor(self, key: str) -> torch.Tensor:
        """The base tensor `key`, read once for consecutive jobs on it."""
        if key != self._base_key or self._base_tensor is None:
            self._base_tensor = None  # drop the old one before reading the new one
            self._base_tensor = read_checked(self.base, key, self.device)
            self._base_key = key
        return self._base_tensor

    def __call__(self, job: Job) -> LoadedPair:
        return load_pair(job.pair, self.base, self.tuned[job.tuned_index], self.device, self.base_tensor)


def load_pair(
    pair: Pair,
    base: TensorSource,
    tuned: Source,
    device: torch.device,
    read_base: BaseReader | None = None,
    with_base: bool = False,
) -> LoadedPair:
    """Read one pair in its stored dtypes, check it is finite, and move it to the compute device.

    Args:
        pair: What to read.
        base: Base checkpoint.
        tuned: Tuned checkpoint or adapter.
        device: Compute device.
        read_base: Optional callable key -> base tensor (on `device`) to share base reads.
        with_base: Also read the base weight of an adapter pair whose delta does not need it.
    """
    get_base = read_base or (lambda key: read_checked(base, key, device))
    if isinstance(pair, StoredMatrix):  # a standalone adapter's own matrix: no base
        assert isinstance(tuned, StandaloneAdapter)
        return LoadedPair(
            pair, {role: _to(_checked(tuned.read(key), tuned, key), device) for role, key in pair.keys}
        )
    if isinstance(pair, QuantizationPair):  # the base against its quantisation (and the adapter on it)
        loaded = {"base": get_base(pair.base_key)}
        if pair.adapter is not None:
            loaded = {**load_pair(pair.adapter, base, tuned, device).tensors, **loaded}
        return LoadedPair(pair, loaded)
    if isinstance(pair, DensePair):
        assert not isinstance(tuned, AdapterSource)
        tuned_t = read_checked(tuned, pair.tuned_key, device)
        return LoadedPair(pair, {"base": get_base(pair.base_key), "tuned": tuned_t})
    assert isinstance(pair, AdapterPair) and isinstance(tuned, AdapterSource)
    tensors = {}
    for role, tensor in tuned.read_tensors(pair.name).items():
        tensors[role] = _to(_checked(tensor, tuned, f"{pair.name} ({role})"), device)
    if pair.needs_base or with_base:
        tensors["base"] = get_base(pair.base_key)
    return LoadedPair(pair, tensors)


def read_checked(source: Source, key: str, device: torch.device) -> torch.Tensor:
    """One stored tensor, refused when it holds NaN or Inf, on the compute device."""
    assert not isinstance(source, AdapterSource | StandaloneAdapter)
    return _to(_checked(source.read(key), source, key), device)


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


@contextmanager
def with_base(
    pairs: Sequence[Pair],
    base_source: TensorSource,
    tuned_source: Source,
    device: torch.device,
    progress: Callable[[int, int, str], None] | None = None,
) -> Iterator[Iterator[LoadedPair]]:
    """`with with_base(pairs, ...) as loads:` yields every pair loaded with its base weight, read one ahead
    (`prefetched`), and calls `progress(done, total, name)` after the caller is done with each (the tools
    that need W₀ itself: intruders, placement)."""

    def load(pair: Pair) -> LoadedPair:
        return load_pair(pair, base_source, tuned_source, device, with_base=True)

    with prefetched(pairs, load) as loads:
        yield _reported(loads, len(pairs), progress)


def _reported(
    loads: Iterator[LoadedPair], total: int, progress: Callable[[int, int, str], None] | None
) -> Iterator[LoadedPair]:
    for index, loaded in enumerate(loads):
        name = loaded.pair.name
        yield loaded
        del loaded  # the caller dropped its reference: the pair is freed before the next one is taken
        if progress is not None:
            progress(index + 1, total, name)


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


def _checked(tensor: torch.Tensor, source: Source, name: str) -> torch.Tensor:
    """Refuse tensors holding NaN or Inf, naming them."""
    if tensor.is_floating_point() and not all_finite(tensor):
        raise InputError(_file_of(source, name), f"tensor {name!r} contains NaN or Inf")
    return tensor


def _file_of(source: Source, name: str) -> Path:
    """The file holding a tensor: the shard of a sharded checkpoint, the weights file of an adapter."""
    if isinstance(source, AdapterSource | StandaloneAdapter):
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
