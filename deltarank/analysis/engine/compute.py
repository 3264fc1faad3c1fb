"""Where and in what dtype a run computes: the device (auto, cpu, cuda, cuda:N) and the precision."""

from __future__ import annotations

from collections.abc import Callable

import torch

from deltarank.errors import OptionError
from deltarank.io.device import resolve_device

__all__ = ["PRECISIONS", "ProgressHook", "resolve_device", "resolve_precision"]

PRECISIONS = {"float32": torch.float32, "float64": torch.float64}
# Called as progress(done, total, name) after each matrix.
ProgressHook = Callable[[int, int, str], None]


def resolve_precision(precision: str) -> torch.dtype:
    """The compute dtype of a precision name (float32 or float64)."""
    if precision not in PRECISIONS:
        raise OptionError(f"unknown precision {precision!r} (float32 or float64)")
    return PRECISIONS[precision]
