"""Where and in what dtype a run computes: the device (auto, cpu, cuda, cuda:N) and the precision."""

from __future__ import annotations

from collections.abc import Callable

import torch

from deltarank.errors import DeltarankError, OptionError

PRECISIONS = {"float32": torch.float32, "float64": torch.float64}
# Called as progress(done, total, name) after each matrix.
ProgressHook = Callable[[int, int, str], None]


def resolve_device(device: str) -> torch.device:
    """`auto` -> CUDA when present, else CPU; `cuda` (or `cuda:N`) without CUDA is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise DeltarankError(f"--device {device} asked for, but no CUDA device is available")
    if device != "cpu" and not device.startswith("cuda"):
        raise OptionError(f"unknown device {device!r} (auto, cpu, cuda or cuda:N)")
    try:
        return torch.device(device)
    except RuntimeError:
        raise OptionError(f"unknown device {device!r} (auto, cpu, cuda or cuda:N)") from None


def resolve_precision(precision: str) -> torch.dtype:
    """The compute dtype of a precision name (float32 or float64)."""
    if precision not in PRECISIONS:
        raise OptionError(f"unknown precision {precision!r} (float32 or float64)")
    return PRECISIONS[precision]
