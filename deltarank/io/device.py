"""The one device resolver: `auto`, `cpu`, `cuda` or `cuda:N`, for train, evaluate, study and the analysis.

`valid_device` checks a name's spelling (options and config files, no torch import); `resolve_device` turns it
into a `torch.device` on this machine, with one error text for a CUDA device that is not there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from deltarank.errors import DeltarankError, OptionError

if TYPE_CHECKING:
    import torch

__all__ = ["DEVICES", "DEVICE_NAMES", "resolve_device", "valid_device"]

DEVICES = ("auto", "cpu", "cuda")  # and cuda:N
DEVICE_NAMES = "auto, cpu, cuda, cuda:N"


def valid_device(device: str) -> bool:
    """auto, cpu, cuda or cuda:N (spelling only: whether CUDA is present is `resolve_device`'s question)."""
    return device in DEVICES or (device.startswith("cuda:") and device[5:].isdigit())


def resolve_device(device: str) -> torch.device:
    """The `torch.device` a device name means here.

    `auto` is CUDA when present, else the CPU; `cuda` is the current CUDA device; `cuda:N` that one.

    Raises:
        OptionError: not one of auto, cpu, cuda, cuda:N (a usage mistake, exit 2).
        DeltarankError: a CUDA device asked for that this machine does not have.
    """
    if not valid_device(device):
        raise OptionError(f"unknown device {device!r} ({DEVICE_NAMES})")
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        return torch.device("cpu")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    index = int(device[5:]) if device.startswith("cuda:") else 0
    if index >= count:
        have = (
            "no CUDA device is"
            if count == 0
            else f"only {count} CUDA device{'s are' if count > 1 else ' is'}"
        )
        raise DeltarankError(f"--device {device} asked for, but {have} available")
    return torch.device(device)
