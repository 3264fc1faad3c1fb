"""The streaming spectrum run: plan pairs, read one pair at a time (the next one prefetched on a thread while
the current one is decomposed), measure it, and collect the records into a `SpectrumResult`.

Peak memory is one tensor pair being decomposed plus at most one pair being read, whatever the model size.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import torch

from deltarank import __version__
from deltarank.analysis.measure import Loaded, LoadedAdapter, LoadedDense, measure
from deltarank.analysis.results import MatrixSpectrum, SkippedTensor, SpectrumResult
from deltarank.errors import DeltarankError, InputError
from deltarank.io.adapter import AdapterSource, is_adapter_dir
from deltarank.io.naming import Selection
from deltarank.io.pairing import AdapterPair, DensePair, Pair, plan_adapter, plan_dense
from deltarank.io.source import TensorSource, open_checkpoint

log = logging.getLogger(__name__)

DEFAULT_THRESHOLDS = (0.5, 0.9, 0.99)
PRECISIONS = {"float32": torch.float32, "float64": torch.float64}
ProgressHook = Callable[[int, int, str], None]


def resolve_device(device: str) -> torch.device:
    """`auto` -> CUDA when present, else CPU; `cuda` without CUDA is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise DeltarankError("--device cuda asked for, but no CUDA device is available")
    if device not in {"cpu"} and not device.startswith("cuda"):
        raise DeltarankError(f"unknown device {device!r} (auto, cpu or cuda)")
    return torch.device(device)


def check_thresholds(thresholds: Sequence[float]) -> tuple[float, ...]:
    """Energy thresholds must lie in (0, 1]; returned sorted and de-duplicated."""
    values = tuple(sorted({float(t) for t in thresholds}))
    if not values or any(not 0.0 < t <= 1.0 for t in values):
        raise DeltarankError(f"energy thresholds must lie in (0, 1], got {list(thresholds)}")
    return values


def spectrum(
    base: str | Path,
    tuned: str | Path,
    *,
    device: str = "auto",
    precision: str = "float32",
    include: str | None = None,
    exclude: str | None = None,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    progress: ProgressHook | None = None,
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
        progress: Called as progress(done, total, name) after each matrix.

    Returns:
        A SpectrumResult with one MatrixSpectrum per analysed matrix.
    """
    if precision not in PRECISIONS:
        raise DeltarankError(f"unknown precision {precision!r} (float32 or float64)")
    taus = check_thresholds(thresholds)
    dev = resolve_device(device)
    selection = Selection(include=include, exclude=exclude)
    base_source = open_checkpoint(base)
    tuned_source: TensorSource | AdapterSource
    pairs: Sequence[Pair]
    skipped: list[SkippedTensor]
    if is_adapter_dir(tuned):
        tuned_source = AdapterSource(tuned)
        pairs, skipped = plan_adapter(base_source, tuned_source, selection)
    else:
        tuned_source = open_checkpoint(tuned)
        pairs, skipped = plan_dense(base_source, tuned_source, selection)
    if not pairs:
        raise DeltarankError(f"no tensor of {base} is selected for analysis (check --include/--exclude)")
    for item in skipped:
        log.warning("skipped %s: %s", item.name, item.reason)
    matrices = []
    for index, record in enumerate(
        _stream(pairs, base_source, tuned_source, dev, PRECISIONS[precision], taus)
    ):
        matrices.append(record)
        if progress is not None:
            progress(index + 1, len(pairs), record.name)
    return SpectrumResult(
        base=str(base),
        tuned=str(tuned),
        device=str(dev),
        precision=precision,
        thresholds=taus,
        matrices=tuple(matrices),
        skipped=tuple(skipped),
        deltarank_version=__version__,
    )


def _stream(
    pairs: Sequence[Pair],
    base: TensorSource,
    tuned: TensorSource | AdapterSource,
    device: torch.device,
    dtype: torch.dtype,
    thresholds: tuple[float, ...],
) -> Iterator[MatrixSpectrum]:
    """Measure pairs in order while a single background thread reads the next one."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="deltarank-prefetch") as pool:
        pending: Future[Loaded] | None = pool.submit(load_pair, pairs[0], base, tuned, device)
        for index in range(len(pairs)):
            assert pending is not None
            loaded = pending.result()
            nxt = index + 1
            pending = pool.submit(load_pair, pairs[nxt], base, tuned, device) if nxt < len(pairs) else None
            try:
                yield measure(loaded, dtype, thresholds)
            except BaseException:
                if pending is not None:
                    pending.cancel()
                raise
            del loaded


def load_pair(
    pair: Pair, base: TensorSource, tuned: TensorSource | AdapterSource, device: torch.device
) -> Loaded:
    """Read one pair in its stored dtypes, check it is finite, and move it to the compute device."""
    if isinstance(pair, DensePair):
        assert not isinstance(tuned, AdapterSource)
        base_t = _checked(base.read(pair.base_key), base, pair.base_key)
        tuned_t = _checked(tuned.read(pair.tuned_key), tuned, pair.tuned_key)
        return LoadedDense(pair, _to(base_t, device), _to(tuned_t, device))
    assert isinstance(pair, AdapterPair) and isinstance(tuned, AdapterSource)
    b, a, magnitude = tuned.read_factors(pair.name)
    for label, factor in (("lora_B", b), ("lora_A", a), ("magnitude", magnitude)):
        if factor is not None:
            _checked(factor, tuned, f"{pair.name} ({label})")
    dora_base = _checked(base.read(pair.base_key), base, pair.base_key) if pair.dora else None
    return LoadedAdapter(
        pair,
        _to(b, device),
        _to(a, device),
        None if magnitude is None else _to(magnitude, device),
        None if dora_base is None else _to(dora_base, device),
    )


def _checked(tensor: torch.Tensor, source: TensorSource | AdapterSource, name: str) -> torch.Tensor:
    """Refuse tensors holding NaN or Inf, naming them."""
    if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
        raise InputError(source.path, f"tensor {name!r} contains NaN or Inf")
    return tensor


def _to(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Move to the compute device; pinned host memory and a non-blocking copy on CUDA."""
    if device.type == "cpu":
        return tensor
    return tensor.pin_memory().to(device, non_blocking=True)
