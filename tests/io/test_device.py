"""One device resolver (`deltarank.io.device`) for train, evaluate, study and the analysis commands."""

from __future__ import annotations

import pytest
import torch

from deltarank.errors import DeltarankError, OptionError
from deltarank.io import device


def test_every_command_uses_the_one_resolver() -> None:
    from deltarank.analysis.engine import compute
    from deltarank.cli import options
    from deltarank.train import config_validation

    assert compute.resolve_device is device.resolve_device
    assert config_validation.valid_device is device.valid_device
    assert options.valid_device is device.valid_device


@pytest.mark.parametrize("name", ["auto", "cpu", "cuda", "cuda:0", "cuda:12"])
def test_valid_names(name: str) -> None:
    assert device.valid_device(name)


@pytest.mark.parametrize("name", ["mps", "tpu", "cuda:", "cuda:x", "CPU", "cuda1"])
def test_unknown_names_are_usage_errors(name: str) -> None:
    assert not device.valid_device(name)
    with pytest.raises(OptionError, match=r"unknown device .* \(auto, cpu, cuda, cuda:N\)"):
        device.resolve_device(name)


def test_cpu_and_auto() -> None:
    assert device.resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert device.resolve_device("auto").type == expected


def test_a_missing_cuda_device_is_one_error_text(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeltarankError) as info:
        device.resolve_device("cuda:1")
    assert str(info.value) == "--device cuda:1 asked for, but no CUDA device is available"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(DeltarankError) as info:
        device.resolve_device("cuda:1")
    assert str(info.value) == "--device cuda:1 asked for, but only 1 CUDA device is available"
    assert device.resolve_device("cuda:0") == torch.device("cuda:0")
