"""Plant known answers into tiny checkpoints (shared by the io, analysis and CLI tests).

Everything here is independent of the code under test: deltas of known rank and singular values are built as
U diag(σ) Vᵀ with orthonormal U, V; checkpoints are written with the `safetensors`, `gguf` and `peft`
libraries themselves (or byte by byte for broken files); GGUF names and the Q/K row permutation follow
llama.cpp's converter, written out again here rather than imported from deltarank.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

# llama.cpp tensor names of a Llama block (convert_hf_to_gguf.py / gguf.constants), HF suffix -> GGUF suffix.
GGUF_BLOCK_NAMES: dict[str, str] = {
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
GGUF_TOP_NAMES: dict[str, str] = {
    "model.embed_tokens": "token_embd",
    "model.norm": "output_norm",
    "lm_head": "output",
}


def weights_of(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A model's state dict as detached copies."""
    return {name: t.detach().clone() for name, t in model.state_dict().items()}


def by_name(result: Any) -> dict[str, Any]:
    """A SpectrumResult's matrices keyed by name."""
    return {m.name: m for m in result.matrices}


def orthonormal_columns(rows: int, k: int, seed: int) -> torch.Tensor:
    """A (rows, k) float64 matrix with orthonormal columns (QR of a seeded Gaussian)."""
    generator = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(rows, k, generator=generator, dtype=torch.float64))
    return q


def planted_delta(shape: tuple[int, int], sigma: list[float] | np.ndarray, seed: int = 0) -> torch.Tensor:
    """ΔW = U diag(σ) Vᵀ (float64, shape (m, n)) with orthonormal U (m, k), V (n, k): rank k = len(σ)."""
    sig = torch.as_tensor(np.asarray(sigma, dtype=np.float64))
    u = orthonormal_columns(shape[0], sig.numel(), seed)
    v = orthonormal_columns(shape[1], sig.numel(), seed + 10_000)
    return (u * sig) @ v.T  # (m, k) diag(σ) (k, n)


def scattered_changes(shape: tuple[int, int], changes: Mapping[float, float], seed: int = 0) -> torch.Tensor:
    """ΔW (float64, shape (m, n)) moving a share of the entries by a given size, for each `size: share` of
    `changes` (disjoint, seeded-random positions), and leaving the rest exactly 0."""
    count = shape[0] * shape[1]
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
    delta = torch.zeros(count, dtype=torch.float64)
    start = 0
    for size, share in changes.items():
        stop = start + round(share * count)
        delta[order[start:stop]] = size
        start = stop
    return delta.reshape(shape)


def full_spectrum(shape: tuple[int, ...], sigma: list[float] | np.ndarray) -> np.ndarray:
    """The planted σ padded with zeros to all min(m, n) singular values, descending."""
    out = np.zeros(min(shape))
    values = np.sort(np.asarray(sigma, dtype=np.float64))[::-1]
    out[: values.size] = values
    return out


def hadamard_delta(
    shape: tuple[int, int], integers: list[int], grid_bits: int
) -> tuple[torch.Tensor, np.ndarray]:
    """A planted delta whose every entry is exact in float32: Hadamard columns scaled to a dyadic grid.

    With H_m, H_n Sylvester–Hadamard matrices (±1 entries, orthogonal columns) and integers c_k,
    ΔW = Σ_k c_k 2^(−grid_bits) h_k g_kᵀ has entries on the grid 2^(−grid_bits), and σ_k = c_k 2^(−grid_bits) √(m n).

    Returns:
        ΔW (float64, exact in float32) and its planted σ (length len(integers), descending as given).
    """
    from scipy.linalg import hadamard

    m, n = shape
    h_m = torch.tensor(hadamard(m), dtype=torch.float64)
    h_n = torch.tensor(hadamard(n), dtype=torch.float64)
    c = torch.tensor(integers, dtype=torch.float64) * 2.0**-grid_bits
    k = len(integers)
    # Columns 1..k (column 0 is all ones; any distinct columns are orthogonal).
    delta = (h_m[:, 1 : k + 1] * c) @ h_n[:, 1 : k + 1].T
    sigma = np.asarray(integers, dtype=np.float64) * 2.0**-grid_bits * np.sqrt(m * n)
    return delta, sigma


def on_grid(tensor: torch.Tensor, grid_bits: int) -> torch.Tensor:
    """Round values to multiples of 2^(−grid_bits) (float32): sums with grid-aligned deltas stay exact."""
    scale = 2.0**grid_bits
    return (torch.round(tensor.double() * scale) / scale).to(torch.float32)


def plant(
    base: Mapping[str, torch.Tensor], deltas: Mapping[str, torch.Tensor], dtype: torch.dtype
) -> dict[str, torch.Tensor]:
    """Tuned weights: base + ΔW (added in float64), every tensor stored in `dtype`."""
    tuned = {}
    for name, weight in base.items():
        value = weight.double() + deltas[name] if name in deltas else weight.double()
        tuned[name] = value.to(dtype).contiguous()
    return tuned


def cast(tensors: Mapping[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Every tensor converted to `dtype` (contiguous copies)."""
    return {name: t.to(dtype).contiguous() for name, t in tensors.items()}


def save_safetensors(path: Path, tensors: Mapping[str, torch.Tensor]) -> Path:
    """Write tensors with the safetensors library (clones, so shared storage is fine)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({name: t.detach().clone().contiguous() for name, t in tensors.items()}, str(path))
    return path


def shuffled(tensors: Mapping[str, torch.Tensor], seed: int = 0) -> dict[str, torch.Tensor]:
    """The same tensors in a seeded random order (dict order decides our own safetensors writer's order)."""
    names = list(tensors)
    order = np.random.default_rng(seed).permutation(len(names))
    return {names[i]: tensors[names[i]] for i in order}


def write_safetensors_bytes(
    path: Path, tensors: Mapping[str, torch.Tensor], header_override: dict[str, Any] | None = None
) -> Path:
    """Write a safetensors file by hand, in the given tensor order, optionally with a doctored header.

    The header's offsets are computed honestly; `header_override` then replaces whole entries (or adds keys),
    which is how the "lying header" tests are built.
    """
    dtype_codes = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16", torch.float64: "F64"}
    header: dict[str, Any] = {}
    blobs: list[bytes] = []
    offset = 0
    for name, tensor in tensors.items():
        blob = tensor.contiguous().view(torch.uint8).numpy().tobytes() if tensor.numel() else b""
        header[name] = {
            "dtype": dtype_codes[tensor.dtype],
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + len(blob)],
        }
        blobs.append(blob)
        offset += len(blob)
    header.update(header_override or {})
    return write_raw_safetensors(path, header, b"".join(blobs))


def write_raw_safetensors(path: Path, header: dict[str, Any], data: bytes) -> Path:
    """8-byte little-endian header length, the JSON header (space-padded to 8 bytes), then `data`."""
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


def llama_cpp_permute(weights: np.ndarray, n_head: int, n_head_kv: int | None) -> np.ndarray:
    """llama.cpp's `LlamaModel.permute` (convert_hf_to_gguf.py), applied to Q (n_head) and K (n_head_kv) rows."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (
        weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def gguf_name(hf_name: str) -> str:
    """llama.cpp's GGUF name of a Hugging Face Llama tensor name."""
    stem, kind = hf_name.rsplit(".", 1)
    if stem.startswith("model.layers."):
        _, _, layer, module = stem.split(".", 3)
        return f"blk.{layer}.{GGUF_BLOCK_NAMES[module]}.{kind}"
    return f"{GGUF_TOP_NAMES[stem]}.{kind}"


def write_llama_gguf(
    path: Path,
    state_dict: Mapping[str, torch.Tensor],
    config: Any,
    np_dtype: type = np.float32,
    quant: str | None = None,
) -> Path:
    """A GGUF file of a Hugging Face Llama, written the way llama.cpp's converter lays it out.

    Llama metadata (head counts, sizes, rope) as the converter writes it; tensors renamed to GGUF names, Q and K
    rows permuted with `llama_cpp_permute`, 2-D weights stored as `np_dtype` (norms always F32, as llama.cpp),
    or quantized with gguf's own `quantize` when `quant` names a type (e.g. "Q8_0").
    """
    import gguf

    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-llama")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_dimension_count(config.hidden_size // config.num_attention_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    rope = getattr(config, "rope_parameters", None) or {}
    writer.add_rope_freq_base(float(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0))))
    for name, tensor in state_dict.items():
        array = tensor.detach().to(torch.float32).numpy()
        if name.endswith("self_attn.q_proj.weight"):
            array = llama_cpp_permute(array, config.num_attention_heads, config.num_attention_heads)
        elif name.endswith("self_attn.k_proj.weight"):
            array = llama_cpp_permute(array, config.num_attention_heads, config.num_key_value_heads)
        if quant is not None and array.ndim == 2:
            qtype = gguf.GGMLQuantizationType[quant]
            writer.add_tensor(gguf_name(name), gguf.quants.quantize(array, qtype), raw_dtype=qtype)
            continue
        array = array.astype(np_dtype if array.ndim == 2 else np.float32)
        writer.add_tensor(gguf_name(name), np.ascontiguousarray(array))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def make_lora_adapter(
    build_model: Callable[[], torch.nn.Module], out: Path, seed: int = 0, **lora_kwargs: Any
) -> torch.nn.Module:
    """Wrap a fresh model with real peft LoRA (random, non-zero B), save the adapter to `out`, return it.

    Args:
        build_model: Builds the base model (the same weights as the saved base checkpoint).
        out: Adapter directory to write.
        seed: Seeds the random A and B (and, for DoRA, a perturbation of the magnitude vector).
        **lora_kwargs: LoraConfig fields (r, lora_alpha, target_modules, use_rslora, use_dora, ...).
    """
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    model = get_peft_model(build_model(), LoraConfig(init_lora_weights=False, **lora_kwargs))
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:  # peft's default init leaves B = 0; make ΔW = s·B·A non-zero
                param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
            elif "lora_magnitude_vector" in name:  # DoRA: move m off ‖W + sBA‖_row so ΔW is dense
                param.mul_(1.0 + 0.1 * torch.randn(param.shape, generator=generator))
    model.save_pretrained(str(out))
    return model


def plant_into(model_dir: Path, out: Path, planted: dict[str, list[float]], seed: int = 0) -> Path:
    """A copy of `model_dir` whose named weights moved by U diag(σ) Vᵀ (`planted_delta`, seed + i for the i-th
    name), saved by `tests.analysis.subspace_models.save_tuned`."""
    from safetensors.torch import load_file

    from tests.analysis.subspace_models import save_tuned

    stored = load_file(str(model_dir / "model.safetensors"))
    deltas = {}
    for i, (module, sigma) in enumerate(planted.items()):
        name = f"{module}.weight"
        weight = stored[name]
        deltas[name] = weight.double() + planted_delta(tuple(weight.shape), sigma, seed=seed + i)
    return save_tuned(model_dir, out, deltas)
