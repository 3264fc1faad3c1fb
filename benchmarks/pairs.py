"""Benchmark inputs: synthetic Llama-shaped checkpoint pairs, the real SmolLM2 base as fp32 safetensors, and a
Llama-7B-shaped LoRA adapter.

Everything is written under benchmarks/out/ (git-ignored) and reused when already there.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import torch
from safetensors.torch import save_file

OUT = Path(__file__).parent / "out"
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def llama_shapes(hidden: int, mlp: int, layers: int) -> dict[str, tuple[int, int]]:
    """Block weights of a Llama with full multi-head attention, plus embeddings, norms and LM head."""
    shapes: dict[str, tuple[int, int]] = {"model.embed_tokens.weight": (8192, hidden)}
    for i in range(layers):
        p = f"model.layers.{i}"
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            shapes[f"{p}.self_attn.{name}.weight"] = (hidden, hidden)
        shapes[f"{p}.mlp.gate_proj.weight"] = (mlp, hidden)
        shapes[f"{p}.mlp.up_proj.weight"] = (mlp, hidden)
        shapes[f"{p}.mlp.down_proj.weight"] = (hidden, mlp)
    shapes["lm_head.weight"] = (8192, hidden)
    return shapes


def synthetic_pair(layers: int = 8, hidden: int = 1024, mlp: int = 2816) -> tuple[Path, Path]:
    """Base and tuned fp32 Hugging Face directories: tuned = base + a rank-64 update + small full-rank noise."""
    from transformers import LlamaConfig

    root = OUT / f"llama-{layers}x{hidden}x{mlp}"
    base, tuned = root / "base", root / "tuned"
    if (base / "model.safetensors").is_file() and (tuned / "model.safetensors").is_file():
        return base, tuned
    generator = torch.Generator().manual_seed(0)
    shapes = llama_shapes(hidden, mlp, layers)
    base_tensors = {n: torch.randn(s, generator=generator) * 0.02 for n, s in shapes.items()}
    for layer in range(layers):
        for norm in ("input_layernorm", "post_attention_layernorm"):
            base_tensors[f"model.layers.{layer}.{norm}.weight"] = torch.ones(hidden)
    base_tensors["model.norm.weight"] = torch.ones(hidden)
    tuned_tensors = {}
    for name, w in base_tensors.items():
        if w.dim() != 2:
            tuned_tensors[name] = w.clone()
            continue
        rows, cols = w.shape
        update = torch.randn(rows, 64, generator=generator) @ torch.randn(64, cols, generator=generator)
        tuned_tensors[name] = w + 1e-4 * update + 1e-5 * torch.randn(rows, cols, generator=generator)
    config = LlamaConfig(
        vocab_size=8192,
        hidden_size=hidden,
        intermediate_size=mlp,
        num_hidden_layers=layers,
        num_attention_heads=hidden // 64,
        num_key_value_heads=hidden // 64,
        tie_word_embeddings=False,
    )
    for directory, tensors in ((base, base_tensors), (tuned, tuned_tensors)):
        directory.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})
        config.save_pretrained(directory)
    return base, tuned


def smollm2_base_safetensors() -> Path:
    """The default model's GGUF dequantized to an fp32 Hugging Face directory (config + model.safetensors)."""
    out = OUT / "smollm2-base"
    if (out / "model.safetensors").is_file():
        return out
    from transformers import AutoConfig

    from deltarank.io.gguf_file import GGUFSource
    from deltarank.train.models import find_default_gguf

    gguf = find_default_gguf()
    source = GGUFSource(gguf)
    out.mkdir(parents=True, exist_ok=True)
    save_file(
        {name: source.read(name).contiguous() for name in source.names()}, str(out / "model.safetensors")
    )
    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config.save_pretrained(out)
    return out


def lora_adapter(layers: int = 32, dim: int = 4096, rank: int = 16) -> tuple[Path, Path]:
    """A LoRA adapter on every projection (all dim × dim) of a `layers`-layer model, and a base checkpoint.

    The base is a valid safetensors file whose data region is a sparse hole (zeros, no disk space): the
    LoRA path reads only its header, for the shapes.
    """
    root = OUT / f"lora-{layers}x{dim}-r{rank}"
    base, adapter = root / "base.safetensors", root / "adapter"
    if base.is_file() and (adapter / "adapter_model.safetensors").is_file():
        return base, adapter
    adapter.mkdir(parents=True, exist_ok=True)
    names = [f"model.layers.{i}.self_attn.{p}" for i in range(layers) for p in PROJECTIONS]
    _sparse_base(base, {f"{n}.weight": (dim, dim) for n in names})
    generator = torch.Generator().manual_seed(0)
    factors = {}
    for n in names:
        factors[f"base_model.model.{n}.lora_A.weight"] = torch.randn(rank, dim, generator=generator) * 0.01
        factors[f"base_model.model.{n}.lora_B.weight"] = torch.randn(dim, rank, generator=generator) * 0.01
    save_file(factors, str(adapter / "adapter_model.safetensors"))
    config = {"peft_type": "LORA", "r": rank, "lora_alpha": 2 * rank, "target_modules": list(PROJECTIONS)}
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    return base, adapter


def _sparse_base(path: Path, shapes: dict[str, tuple[int, int]]) -> None:
    header: dict[str, object] = {}
    offset = 0
    for name, (rows, cols) in shapes.items():
        header[name] = {
            "dtype": "F32",
            "shape": [rows, cols],
            "data_offsets": [offset, offset + rows * cols * 4],
        }
        offset += rows * cols * 4
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with path.open("wb") as handle:
        handle.write(struct.pack("<Q", len(raw)) + raw)
        handle.truncate(8 + len(raw) + offset)
