"""Write a PEFT LoRA adapter directory atomically, streaming the factors to disk one module at a time.

Layout, as `peft.PeftModel.from_pretrained` reads it: `adapter_config.json` (peft_type LORA, r, lora_alpha,
target_modules, rank_pattern, alpha_pattern, base_model_name_or_path) and `adapter_model.safetensors` with
keys `base_model.model.<module>.lora_A.weight` (r, in) and `...lora_B.weight` (out, r); an input embedding
(nn.Embedding, weight (num_embeddings, dim)) has `...lora_embedding_A` (r, num_embeddings) and
`...lora_embedding_B` (dim, r), merged by peft as ΔW = (B A)ᵀ · α/r.

safetensors needs its header (every name, shape and offset) before the data, and with per-matrix ranks the
shapes are only known at the end; so each factor is appended to a spill file as it is computed and the final
file is header + a streamed copy of the spill. Everything is built in a hidden temporary directory beside the
target and renamed into place, so a failure leaves no partial adapter directory.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path
from typing import Any

import torch

from deltarank.io.dtypes import SAFETENSORS_DTYPES

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."
HEADER_ALIGN = 8  # safetensors pads the JSON header with spaces to a multiple of 8 bytes
COPY_CHUNK = 1 << 24
DTYPE_CODES = {dtype: code for code, dtype in SAFETENSORS_DTYPES.items()}


class SafetensorsWriter:
    """Append tensors one at a time to a spill file, then write the real .safetensors file in one pass."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._spill_path = path.with_name(path.name + ".spill")
        self._spill = self._spill_path.open("wb")
        self._entries: dict[str, dict[str, Any]] = {}
        self._offset = 0

    def add(self, name: str, tensor: torch.Tensor) -> None:
        """Append one tensor (float16/bfloat16/float32/float64, any device) under `name`."""
        data = tensor.detach().cpu().contiguous()
        raw = data.reshape(-1).view(torch.uint8).numpy().tobytes()
        end = self._offset + len(raw)
        code = DTYPE_CODES[data.dtype]
        self._entries[name] = {"dtype": code, "shape": list(data.shape), "data_offsets": [self._offset, end]}
        self._spill.write(raw)
        self._offset = end

    def finish(self, metadata: dict[str, str]) -> None:
        """Write header + data to `path` and remove the spill file."""
        self._spill.close()
        header = json.dumps({"__metadata__": metadata, **self._entries}, separators=(",", ":")).encode()
        header += b" " * (-len(header) % HEADER_ALIGN)
        with self.path.open("wb") as out, self._spill_path.open("rb") as spill:
            out.write(struct.pack("<Q", len(header)))
            out.write(header)
            shutil.copyfileobj(spill, out, COPY_CHUNK)
            out.flush()
            os.fsync(out.fileno())
        self._spill_path.unlink()

    def abort(self) -> None:
        """Close and drop the spill file (the temporary directory goes too)."""
        self._spill.close()
        self._spill_path.unlink(missing_ok=True)


def lora_keys(module: str) -> tuple[str, str]:
    """peft's saved key names of B and A for a module name like `model.layers.0.self_attn.q_proj`."""
    return f"{PEFT_PREFIX}{module}.lora_B.weight", f"{PEFT_PREFIX}{module}.lora_A.weight"


def embedding_keys(module: str) -> tuple[str, str]:
    """peft's saved key names of B (dim, r) and A (r, num_embeddings) of an nn.Embedding like
    `model.embed_tokens` (no `.weight` suffix: peft stores them as parameters, not sub-modules)."""
    return f"{PEFT_PREFIX}{module}.lora_embedding_B", f"{PEFT_PREFIX}{module}.lora_embedding_A"


def adapter_config(ranks: dict[str, int], base_model: str) -> dict[str, Any]:
    """A LoRA `adapter_config.json` with scale 1 everywhere: α = r, and α_pattern = rank_pattern.

    The default r is the most common rank; modules with another rank go to rank_pattern (keys are full
    module names, which peft matches as `(.*\\.)?(<name>)$`).
    """
    values = list(ranks.values())
    default = max(sorted(set(values)), key=values.count)
    pattern = {module: rank for module, rank in ranks.items() if rank != default}
    return {
        "peft_type": "LORA",
        "task_type": None,
        "base_model_name_or_path": base_model,
        "r": default,
        "lora_alpha": default,
        "target_modules": list(ranks),
        "rank_pattern": pattern,
        "alpha_pattern": dict(pattern),
        "lora_dropout": 0.0,
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": False,
        "use_dora": False,
        "init_lora_weights": True,
        "modules_to_save": None,
        "inference_mode": True,
    }
