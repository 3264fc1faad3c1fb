"""`open_checkpoint`: the reader (a `deltarank.io.base.TensorSource`) for a checkpoint path."""

from __future__ import annotations

import glob
import re
from collections.abc import Sequence
from pathlib import Path

from deltarank.errors import DeltarankError, InputError
from deltarank.io.base import PICKLE_SUFFIXES, TensorSource, refuse_pickle
from deltarank.io.gguf_file import GGUFSource
from deltarank.io.model_ref import local_path
from deltarank.io.safetensors_file import SafetensorsSource, ShardedSafetensorsSource

__all__ = ["TensorSource", "expand_checkpoints", "open_checkpoint"]


def open_checkpoint(path: str | Path) -> TensorSource:
    """Open a model checkpoint: a .safetensors file, a Hugging Face directory (single or sharded) or GGUF.

    Args:
        path: A model reference (`deltarank.io.model_ref.local_path`): a file or directory, a built-in name
            (`smollm2-135m`: its GGUF file), or a Hugging Face repo id `org/name[@revision]` in the local cache.

    Returns:
        A TensorSource for it.

    Raises:
        InputError: missing path or uncached repo id, pickle checkpoint, directory without weights, unreadable
            file.
    """
    p = local_path(path)
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


def expand_checkpoints(paths: Sequence[str]) -> list[str]:
    """Paths as given; a pattern such as run/checkpoint-* that names no file is expanded (sorted by step)."""
    out: list[str] = []
    for raw in paths:
        if Path(raw).exists() or not glob.has_magic(raw):
            out.append(raw)
            continue
        matches = sorted(glob.glob(raw), key=_natural_key)
        if not matches:
            raise DeltarankError(f"{raw}: no checkpoint matches this pattern")
        out.extend(matches)
    return out


def _natural_key(text: str) -> list[object]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]
