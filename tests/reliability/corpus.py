"""Builders of good and bad inputs for the reliability tests: every file is written by a fixture, none committed.

The good checkpoints are tiny safetensors files with Llama-style names (two blocks, q_proj and v_proj, 16×16),
so a spectrum of them takes milliseconds; the bad ones are variations on them. `assert_one_line_error` is the
check every bad input's CLI result must pass.
"""

from __future__ import annotations

import json
import os
import pathlib
import pickle
import re
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from click.testing import Result
from safetensors.torch import save_file

DIM = 16
MODULES = ("q_proj", "v_proj")


def block_names(layers: int = 2, modules: Iterable[str] = MODULES) -> list[str]:
    """`model.layers.<i>.self_attn.<module>.weight` for every layer and module."""
    return [f"model.layers.{i}.self_attn.{m}.weight" for i in range(layers) for m in modules]


def random_weights(
    seed: int, names: Iterable[str] | None = None, shape: tuple[int, int] = (DIM, DIM)
) -> dict[str, torch.Tensor]:
    """Gaussian fp32 tensors of one shape, reproducible from `seed`."""
    generator = torch.Generator().manual_seed(seed)
    return {name: torch.randn(shape, generator=generator) for name in names or block_names()}


def tuned_from(base: dict[str, torch.Tensor], seed: int, scale: float = 0.01) -> dict[str, torch.Tensor]:
    """`base` plus a small random delta on every tensor."""
    generator = torch.Generator().manual_seed(seed)
    return {name: t + scale * torch.randn(t.shape, generator=generator) for name, t in base.items()}


def write_safetensors(path: Path, tensors: dict[str, torch.Tensor]) -> Path:
    """Save tensors with the safetensors library (creating the parent directory)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({name: t.contiguous() for name, t in tensors.items()}, str(path))
    return path


def write_raw_safetensors(path: Path, header: dict[str, Any], data: bytes) -> Path:
    """A safetensors file from a hand-written header: 8-byte length, JSON header, raw bytes."""
    encoded = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + data)
    return path


class TouchOnUnpickle:
    """Unpickling this object calls `pathlib.Path.touch(marker)`: proof that code ran from a weights file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def write_pickle_payload(path: Path, marker: Path) -> Path:
    """A pickle checkpoint whose loading would create `marker`: torch.save's zip format, or raw pickle for .bin."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"model.layers.0.self_attn.q_proj.weight": TouchOnUnpickle(marker)}
    if path.suffix == ".bin":
        path.write_bytes(pickle.dumps(payload))
    else:
        torch.save(payload, path)
    return path


def write_adapter(
    directory: Path,
    config: dict[str, Any] | str | None,
    module: str = "model.layers.0.self_attn.q_proj",
    a_shape: tuple[int, ...] = (4, DIM),
    b_shape: tuple[int, ...] = (DIM, 4),
) -> Path:
    """A PEFT adapter directory: factors of one module, and `config` as adapter_config.json (None: no file)."""
    generator = torch.Generator().manual_seed(7)
    factors = {
        f"base_model.model.{module}.lora_A.weight": torch.randn(a_shape, generator=generator),
        f"base_model.model.{module}.lora_B.weight": torch.randn(b_shape, generator=generator),
    }
    write_safetensors(directory / "adapter_model.safetensors", factors)
    if config is not None:
        text = config if isinstance(config, str) else json.dumps(config)
        (directory / "adapter_config.json").write_text(text)
    return directory


LORA_CONFIG: dict[str, Any] = {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj"]}


def tree_state(root: Path) -> dict[str, tuple[int, int, bytes] | None]:
    """Every path under `root`: files with (size, mtime, contents), directories as None.

    Two equal states mean nothing was created, removed or rewritten (a temp file made and deleted again
    leaves no trace here, which is the promise: no partial output).
    """
    state: dict[str, tuple[int, int, bytes] | None] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            state[os.path.relpath(os.path.join(dirpath, name), root)] = None
        for name in filenames:
            path = Path(dirpath, name)
            info = path.stat()
            state[os.path.relpath(path, root)] = (info.st_size, info.st_mtime_ns, path.read_bytes())
    return state


def assert_one_line_error(result: Result, named: Path | str, problem: str) -> str:
    """Exit 1 through SystemExit, nothing on stdout, one `Error:` line naming the file and the problem."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # not an uncaught exception
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("Error: ") and "Traceback" not in line and "internal error" not in line
    assert str(named) in line, line
    assert re.search(problem, line), line
    return line
