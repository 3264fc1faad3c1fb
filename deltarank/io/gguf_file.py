"""Read GGUF checkpoints (llama.cpp's format) as Hugging Face-named float32 tensors.

Each tensor is dequantized on its own (`gguf.quants.dequantize`), renamed through one table to its
Hugging Face name, and, for Llama-family models, the Q/K row permutation that llama.cpp's converter applies
is undone exactly as transformers does (`LlamaTensorProcessor._reverse_permute_weights`). Gemma 3 stores
its RMSNorm weights as 1 + w (Gemma's norm multiplies by 1 + w; llama.cpp's by w), so 1 is subtracted from
every `*norm.weight` exactly as transformers' `Gemma2TensorProcessor` does, in float32.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deltarank.errors import InputError
from deltarank.io.base import TensorInfo

# GGUF block-tensor suffix -> Hugging Face suffix (Llama family: llama, mistral, qwen2, ...).
BLOCK_NAMES: dict[str, str] = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
TOP_NAMES: dict[str, str] = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
}
# Per-architecture differences from BLOCK_NAMES (gguf-py's tensor map, as transformers reads it).
ARCH_BLOCK_NAMES: dict[str, dict[str, str]] = {
    "gemma3": {
        "ffn_norm": "pre_feedforward_layernorm",
        "post_attention_norm": "post_attention_layernorm",
        "post_ffw_norm": "post_feedforward_layernorm",
    },
}
# Architectures whose converter permutes Q/K rows for rotary embeddings (llama.cpp `LlamaModel.permute`).
PERMUTED_ARCHS = {"llama", "mistral"}
# Architectures whose converter stores RMSNorm weights plus one (llama.cpp `Gemma3Model`: `data_torch + 1`).
NORM_PLUS_ONE_ARCHS = {"gemma3"}
SUPPORTED_ARCHS = PERMUTED_ARCHS | NORM_PLUS_ONE_ARCHS | {"qwen2", "qwen3"}
_BLOCK = re.compile(r"^blk\.(\d+)\.([a-z_]+)\.(weight|bias)$")
_TOP = re.compile(r"^([a-z_]+)\.(weight|bias)$")


def hf_name(gguf_name: str, arch: str = "llama") -> str | None:
    """The Hugging Face name of a GGUF tensor name, or None when the table has no entry."""
    if m := _BLOCK.match(gguf_name):
        layer, part, kind = m.groups()
        table = {**BLOCK_NAMES, **ARCH_BLOCK_NAMES.get(arch, {})}
        return f"model.layers.{layer}.{table[part]}.{kind}" if part in table else None
    if m := _TOP.match(gguf_name):
        part, kind = m.groups()
        return f"{TOP_NAMES[part]}.{kind}" if part in TOP_NAMES else None
    return None


def reverse_permute(weights: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's rotary row permutation of a Q or K projection.

    The converter stores rows as (head, 2, dim/2) interleaved; Hugging Face keeps (head, dim/2, 2) halves.
    Shapes: weights (n_head·dim, in) -> (n_head, dim/2, 2, in) -> swap -> (n_head·dim, in).
    """
    half = weights.shape[0] // n_head // 2
    w = weights.reshape(n_head, half, 2, *weights.shape[1:])
    return w.swapaxes(2, 1).reshape(weights.shape)


class GGUFSource:
    """A GGUF file, read one tensor at a time."""

    def __init__(self, path: str | Path) -> None:
        import gguf

        self.path = Path(path)
        try:
            self._reader = gguf.GGUFReader(self.path)
        except Exception as exc:  # gguf raises ValueError/struct errors/IndexError on bad files
            raise InputError(self.path, f"not a readable GGUF file ({type(exc).__name__}: {exc})") from None
        self.arch = str(self._field("general.architecture", ""))
        if self.arch not in SUPPORTED_ARCHS:
            raise InputError(
                self.path,
                f"GGUF architecture {self.arch!r} is not supported ({', '.join(sorted(SUPPORTED_ARCHS))})",
            )
        try:
            self.n_head = int(self._field(f"{self.arch}.attention.head_count", 0))
            self.n_kv_head = int(self._field(f"{self.arch}.attention.head_count_kv", self.n_head))
        except (TypeError, ValueError):
            raise InputError(self.path, "attention.head_count is not an integer") from None
        if self.arch in PERMUTED_ARCHS and min(self.n_head, self.n_kv_head) <= 0:
            raise InputError(self.path, f"{self.arch} GGUF without a positive attention.head_count")
        self._tensors: dict[str, Any] = {}
        for tensor in self._reader.tensors:
            name = hf_name(tensor.name, self.arch)
            if name is not None:
                self._tensors[name] = tensor

    def _field(self, key: str, default: Any) -> Any:
        field = self._reader.fields.get(key)
        if field is None:
            return default
        value = field.contents()
        return value if value is not None else default

    def _permutable(self, name: str, array: np.ndarray, n_head: int) -> np.ndarray:
        """The rotary permutation splits rows into n_head × 2 halves: refuse shapes it does not fit."""
        if array.ndim != 2 or array.shape[0] % (2 * n_head):
            raise InputError(
                self.path, f"tensor {name!r} of shape {array.shape} does not split into {n_head} heads"
            )
        return array

    def names(self) -> list[str]:
        return list(self._tensors)

    def info(self, name: str) -> TensorInfo:
        tensor = self._tensors[name]
        shape = tuple(int(d) for d in reversed(tensor.shape.tolist()))  # ggml order is (in, out)
        return TensorInfo(name=name, shape=shape, dtype=tensor.tensor_type.name, file=self.path)

    def read(self, name: str) -> torch.Tensor:
        from gguf.quants import dequantize

        tensor = self._tensors[name]
        array = np.asarray(dequantize(tensor.data, tensor.tensor_type), dtype=np.float32)
        array = array.reshape(self.info(name).shape)
        if self.arch in NORM_PLUS_ONE_ARCHS and tensor.name.endswith("norm.weight"):
            array = array - 1  # float32 minus 1, as transformers computes it
        if self.arch in PERMUTED_ARCHS:
            if name.endswith("self_attn.q_proj.weight"):
                array = reverse_permute(self._permutable(name, array, self.n_head), self.n_head)
            elif name.endswith("self_attn.k_proj.weight"):
                array = reverse_permute(self._permutable(name, array, self.n_kv_head), self.n_kv_head)
        return torch.from_numpy(np.array(array, dtype=np.float32, order="C"))  # own, writable copy
