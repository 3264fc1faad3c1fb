"""Read safetensors checkpoints one tensor at a time, with plain positional reads.

The format is an 8-byte little-endian header length, a JSON header, then the raw bytes. We parse and check
the header ourselves (every offset, size and dtype) so a truncated or lying file gives a precise error, and
we read each tensor with `readinto` rather than a memory map, so pages of tensors already analysed do not
stay resident: peak memory stays near one tensor pair whatever the checkpoint size.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from deltarank.errors import InputError
from deltarank.io.base import TensorInfo
from deltarank.io.dtypes import SAFETENSORS_DTYPES, UNREADABLE_ITEMSIZE

# Header larger than this is refused (safetensors itself caps it at 100 MB).
MAX_HEADER_BYTES = 100_000_000


@dataclass(frozen=True)
class _Entry:
    dtype: str
    shape: tuple[int, ...]
    start: int  # absolute byte offset in the file
    nbytes: int


def read_header(path: Path) -> tuple[dict[str, _Entry], dict[str, str]]:
    """Parse and validate a safetensors header.

    Args:
        path: The .safetensors file.

    Returns:
        Entries by tensor name, and the `__metadata__` dict.

    Raises:
        InputError: empty, truncated, not safetensors, or a header whose offsets/dtypes/shapes do not fit.
    """
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            prefix = handle.read(8)
            if len(prefix) < 8:
                raise InputError(path, "empty or truncated file (no safetensors header)")
            (header_len,) = struct.unpack("<Q", prefix)
            if header_len > min(MAX_HEADER_BYTES, size - 8):
                raise InputError(path, "not a safetensors file, or truncated (header length exceeds file)")
            raw = handle.read(header_len)
    except OSError as exc:
        raise InputError(path, f"cannot read ({exc.strerror or exc})") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise InputError(path, "not a safetensors file (header is not valid JSON)") from None
    if not isinstance(header, dict):
        raise InputError(path, "not a safetensors file (header is not a JSON object)")
    metadata = header.pop("__metadata__", None) or {}
    data_start = 8 + header_len
    entries = {name: _parse_entry(path, name, spec, data_start) for name, spec in header.items()}
    _check_layout(path, entries, size - data_start, data_start)
    return entries, metadata if isinstance(metadata, dict) else {}


def _parse_entry(path: Path, name: str, spec: Any, data_start: int) -> _Entry:
    """Check one header entry: known dtype, integer shape, offsets matching shape × itemsize."""
    if not isinstance(spec, dict) or not {"dtype", "shape", "data_offsets"} <= spec.keys():
        raise InputError(path, f"header entry {name!r} is malformed")
    dtype, shape, offsets = spec["dtype"], spec["shape"], spec["data_offsets"]
    if not isinstance(dtype, str) or not dtype:
        raise InputError(path, f"tensor {name!r} has an invalid dtype {dtype!r}")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise InputError(path, f"tensor {name!r} has an invalid shape {shape!r}")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(type(o) is int and o >= 0 for o in offsets)
        or offsets[1] < offsets[0]
    ):
        raise InputError(path, f"tensor {name!r} has invalid data offsets {offsets!r}")
    itemsize = _itemsize(dtype)
    expected = math.prod(shape) * itemsize if itemsize else offsets[1] - offsets[0]
    if offsets[1] - offsets[0] != expected:
        raise InputError(
            path,
            f"header lies about tensor {name!r}: {dtype}{shape} needs {expected} bytes, "
            f"offsets give {offsets[1] - offsets[0]}",
        )
    return _Entry(dtype=dtype, shape=tuple(shape), start=data_start + offsets[0], nbytes=expected)


def _itemsize(dtype: str) -> int | None:
    """Bytes per element of a safetensors dtype code; None for a code unknown to this version (opaque)."""
    if dtype in SAFETENSORS_DTYPES:
        return torch.empty((), dtype=SAFETENSORS_DTYPES[dtype]).element_size()
    return UNREADABLE_ITEMSIZE.get(dtype)


def _check_layout(path: Path, entries: dict[str, _Entry], data_size: int, data_start: int) -> None:
    """Tensors must lie inside the file and not overlap."""
    spans = sorted((e.start - data_start, e.start - data_start + e.nbytes, n) for n, e in entries.items())
    previous_end = 0
    for begin, end, name in spans:
        if end > data_size:
            raise InputError(path, f"truncated file: tensor {name!r} ends past the end of the file")
        if begin < previous_end:
            raise InputError(path, f"header lies: tensor {name!r} overlaps the previous tensor")
        previous_end = max(previous_end, end)


def read_entry(path: Path, name: str, entry: _Entry) -> torch.Tensor:
    """Read one tensor's bytes into a fresh tensor (no memory map).

    Raises:
        InputError: a dtype deltarank cannot decode (planning skips those tensors; see `TensorInfo.readable`).
    """
    if entry.dtype not in SAFETENSORS_DTYPES:
        raise InputError(path, f"tensor {name!r} has dtype {entry.dtype}, which deltarank cannot read")
    buffer = torch.empty(entry.nbytes, dtype=torch.uint8)
    try:
        with path.open("rb") as handle:
            handle.seek(entry.start)
            got = handle.readinto(buffer.numpy().data) if entry.nbytes else 0
    except OSError as exc:
        raise InputError(path, f"cannot read tensor {name!r} ({exc.strerror or exc})") from None
    if got != entry.nbytes:
        raise InputError(path, f"truncated file: tensor {name!r} is incomplete")
    return buffer.view(SAFETENSORS_DTYPES[entry.dtype]).reshape(entry.shape)


class SafetensorsSource:
    """A single .safetensors file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(self.path, "no such file")
        self._entries, self.metadata = read_header(self.path)
        if not self._entries:
            raise InputError(self.path, "safetensors file holds no tensors")

    def names(self) -> list[str]:
        return list(self._entries)

    def info(self, name: str) -> TensorInfo:
        entry = self._entries[name]
        return TensorInfo(name, entry.shape, entry.dtype, self.path, entry.dtype in SAFETENSORS_DTYPES)

    def read(self, name: str) -> torch.Tensor:
        return read_entry(self.path, name, self._entries[name])


class ShardedSafetensorsSource:
    """A Hugging Face sharded checkpoint: `model.safetensors.index.json` mapping names to shard files.

    Shard headers are read once (they are small); tensor data is read per tensor, so at most one shard
    file is open at any moment.
    """

    def __init__(self, index_path: str | Path) -> None:
        index_path = Path(index_path)
        self.path = index_path.parent
        try:
            weight_map = json.loads(index_path.read_text())["weight_map"]
        except (OSError, ValueError, KeyError, TypeError, RecursionError):
            raise InputError(index_path, "invalid sharded index (expected a JSON 'weight_map')") from None
        if not isinstance(weight_map, dict) or not weight_map:
            raise InputError(index_path, "sharded index has an empty 'weight_map'")
        self._where: dict[str, tuple[Path, _Entry]] = {}
        headers: dict[str, dict[str, _Entry]] = {}
        for name, shard in weight_map.items():
            if not isinstance(shard, str) or not shard:
                raise InputError(index_path, f"weight_map gives tensor {name!r} an invalid shard {shard!r}")
            shard_path = self.path / shard
            if shard not in headers:
                if not shard_path.is_file():
                    raise InputError(index_path, f"names a missing shard {shard!r} (for tensor {name!r})")
                headers[shard] = read_header(shard_path)[0]
            if name not in headers[shard]:
                raise InputError(shard_path, f"does not hold tensor {name!r} that the index points to")
            self._where[name] = (shard_path, headers[shard][name])

    def names(self) -> list[str]:
        return list(self._where)

    def info(self, name: str) -> TensorInfo:
        shard, entry = self._where[name]
        return TensorInfo(name, entry.shape, entry.dtype, shard, entry.dtype in SAFETENSORS_DTYPES)

    def read(self, name: str) -> torch.Tensor:
        shard, entry = self._where[name]
        return read_entry(shard, name, entry)
