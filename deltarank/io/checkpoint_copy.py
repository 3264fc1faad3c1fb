"""Rewrite a safetensors checkpoint or adapter into a new directory, tensor by tensor, changing some tensors.

The layout is kept: each weights file of the source (one `model.safetensors`, every shard of a sharded
checkpoint, or an adapter's `adapter_model.safetensors`) is written under the same name, its tensors in the
same order, each either replaced or copied unchanged (same dtype, same bytes); the other regular files beside
them (config, generation config, tokenizer, sharded index, adapter_config.json, README) are copied as they are.
Only one tensor is in memory at a time: `SafetensorsWriter` spills each to disk as it is added.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import torch

from deltarank.errors import InputError
from deltarank.io.adapter_writer import DTYPE_CODES, SafetensorsWriter
from deltarank.io.base import PICKLE_SUFFIXES, TensorSource

# What a rewritten weights file records as its safetensors metadata (transformers reads the format).
METADATA = {"format": "pt"}
# Weight files of other formats beside the checkpoint: never copied (the rewritten safetensors replace them).
WEIGHT_SUFFIXES = (".safetensors", ".gguf", *PICKLE_SUFFIXES)
# Given a stored key and its tensor as stored, the tensor to write instead (the same one to copy it).
Replace = Callable[[str, torch.Tensor], torch.Tensor]


def weight_files(source: TensorSource) -> dict[Path, list[str]]:
    """The source's tensor names grouped by the file holding them, in file order.

    Raises:
        InputError: a tensor is stored in a dtype that cannot be read and written back.
    """
    files: dict[Path, list[str]] = {}
    for name in source.names():
        info = source.info(name)
        if info.file.suffix != ".safetensors":
            raise InputError(info.file, "only safetensors checkpoints can be rewritten")
        if not info.readable:
            raise InputError(
                info.file, f"tensor {name!r} has stored dtype {info.dtype}, which is not rewritten"
            )
        files.setdefault(info.file, []).append(name)
    return files


def rewrite_checkpoint(source: TensorSource, out_dir: Path, replace: Replace) -> None:
    """Write every weights file of `source` into `out_dir` (same file names), each tensor through `replace`.

    Args:
        source: The checkpoint or adapter weights to rewrite.
        out_dir: An existing (temporary) directory.
        replace: Called on each stored key and tensor; returns the tensor to write (same shape).
    """
    for file, names in weight_files(source).items():
        writer = SafetensorsWriter(out_dir / file.name)
        try:
            for name in names:
                stored = source.read(name)
                new = replace(name, stored)
                if new.shape != stored.shape or new.dtype not in DTYPE_CODES:
                    raise InputError(
                        file, f"tensor {name!r}: the replacement does not fit {tuple(stored.shape)}"
                    )
                writer.add(name, new)
                del stored, new
            writer.finish(METADATA)
        except BaseException:
            writer.abort()
            raise


def copy_companions(source_dir: Path, out_dir: Path) -> list[str]:
    """Copy the regular files of `source_dir` that are not weights (config, tokenizer, index, README) into
    `out_dir`, skipping hidden files, sub-directories and files `out_dir` already holds; returns their names."""
    copied = []
    for path in sorted(source_dir.iterdir()):
        if not path.is_file() or path.name.startswith(".") or path.suffix in WEIGHT_SUFFIXES:
            continue
        if (out_dir / path.name).exists():
            continue
        shutil.copy2(path, out_dir / path.name)
        copied.append(path.name)
    return copied
