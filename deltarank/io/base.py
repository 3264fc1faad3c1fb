"""What every checkpoint reader shares: `TensorInfo`, the `TensorSource` protocol and the pickle refusal.

A source lists tensor names (already canonical Hugging Face names), describes each without reading it, and
reads one tensor at a time: nothing here ever loads a whole model. The readers (`safetensors_file`,
`gguf_file`) implement the protocol; `source.open_checkpoint` picks one for a path.
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
        readable: False for a stored dtype this reader cannot decode (it is listed, never read).
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    file: Path
    readable: bool = True


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
