"""The TensorSource protocol and `open_checkpoint`, which picks the reader for a path.

A source lists tensor names (already canonical Hugging Face names), describes each without reading it, and
reads one tensor at a time: nothing here ever loads a whole model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from deltarank.errors import InputError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


@dataclass(frozen=True)
class TensorInfo:
    """What a checkpoint says about one tensor, before reading it.

    Attributes:
        name: Canonical (Hugging Face) name.
        shape: Logical shape, e.g. (out, in) for a linear weight.
        dtype: Stored dtype label: safetensors codes (F32, BF16, F16, ...) or GGUF types (Q4_1, F16, ...).
        file: The file the tensor lives in.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    file: Path


class TensorSource(Protocol):
    """A checkpoint that yields tensors one at a time."""

    path: Path

    def names(self) -> list[str]:
        """All tensor names, canonical, in file order."""
        ...

    def info(self, name: str) -> TensorInfo:
        """Shape and stored dtype of one tensor, without reading its data."""
        ...

    def read(self, name: str) -> torch.Tensor:
        """One tensor in its stored dtype (GGUF quantized types come back dequantized to float32)."""
        ...


def refuse_pickle(path: Path) -> InputError:
    """The error for a pickle checkpoint: never unpickled, not even with weights_only."""
    return InputError(
        path,
        "pickle checkpoints are never loaded (they can run code); convert it to safetensors first, "
        "e.g. with transformers: AutoModel.from_pretrained(dir).save_pretrained(out, safe_serialization=True)",
    )


def open_checkpoint(path: str | Path) -> TensorSource:
    """Open a model checkpoint: a .safetensors file, a Hugging Face directory (single or sharded) or GGUF.

    Args:
        path: File or directory.

    Returns:
        A TensorSource for it.

    Raises:
        InputError: missing path, pickle checkpoint, directory without weights, unreadable file.
    """
    from deltarank.io.gguf_file import GGUFSource
    from deltarank.io.safetensors_file import SafetensorsSource, ShardedSafetensorsSource

    p = Path(path)
    if not p.exists():
        raise InputError(p, "no such file or directory")
    if p.is_dir():
        index = p / "model.safetensors.index.json"
        if index.is_file():
            return ShardedSafetensorsSource(index)
        single = p / "model.safetensors"
        if single.is_file():
            return SafetensorsSource(single)
        if (p / "adapter_model.safetensors").is_file() and not (p / "adapter_config.json").is_file():
            raise InputError(
                p, "looks like a PEFT adapter (adapter_model.safetensors) but has no adapter_config.json"
            )
        candidates = sorted(p.glob("*.safetensors"))
        if len(candidates) == 1:
            return SafetensorsSource(candidates[0])
        ggufs = sorted(p.glob("*.gguf"))
        if len(ggufs) == 1 and not candidates:
            return GGUFSource(ggufs[0])
        pickles = [f for f in sorted(p.iterdir()) if f.suffix in PICKLE_SUFFIXES]
        if pickles:
            raise refuse_pickle(pickles[0])
        if (p / "adapter_config.json").exists():
            raise InputError(p, "is a PEFT adapter directory; give it as TUNED, with the base model as BASE")
        if len(candidates) > 1:
            raise InputError(p, "several .safetensors files but no model.safetensors.index.json")
        raise InputError(p, "directory holds no model weights (model.safetensors or its sharded index)")
    if p.suffix in PICKLE_SUFFIXES:
        raise refuse_pickle(p)
    if p.suffix == ".gguf":
        return GGUFSource(p)
    if p.name.endswith(".safetensors.index.json"):
        return ShardedSafetensorsSource(p)
    return SafetensorsSource(p)
