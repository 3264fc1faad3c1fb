"""Benchmark inputs: synthetic Llama-shaped checkpoint pairs, the real SmolLM2 base as fp32 safetensors, and a
Llama-7B-shaped LoRA adapter.

Everything is written under benchmarks/out/ (git-ignored) and reused when already there.
"""

from __future__ import annotations

import json
import math
import struct
import time
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


def tiny_adapter_pair(dora: bool, hidden: int = 64, layers: int = 2) -> tuple[Path, Path]:
    """A tiny random fp32 Llama (Hugging Face directory) and a PEFT LoRA or DoRA adapter on every projection.

    r = 4, α = 8, factors drawn at random (`init_lora_weights=False`, so ΔW ≠ 0); for DoRA the magnitude vector
    is also perturbed by ±10 % so the delta differs from the plain LoRA product. Seeded: the same files every time.
    """
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    root = OUT / f"tiny-llama-{layers}x{hidden}"
    base, adapter = root / "base", root / ("adapter-dora" if dora else "adapter-lora")
    if (base / "model.safetensors").is_file() and (adapter / "adapter_model.safetensors").is_file():
        return base, adapter
    config = LlamaConfig(
        vocab_size=256,
        hidden_size=hidden,
        intermediate_size=hidden * 43 // 16,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        tie_word_embeddings=False,
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = LlamaForCausalLM(config)
        if not (base / "model.safetensors").is_file():
            model.save_pretrained(base)
        torch.manual_seed(1 if dora else 2)
        peft_config = LoraConfig(
            r=4, lora_alpha=8, use_dora=dora, init_lora_weights=False, target_modules=list(PROJECTIONS)
        )
        peft_model = get_peft_model(model, peft_config)
        with torch.no_grad():
            for name, param in peft_model.named_parameters():
                if "lora_magnitude_vector" in name:
                    param.mul_(1.0 + 0.1 * torch.randn_like(param))
        peft_model.save_pretrained(adapter)
    return base, adapter


def plan_shards(shapes: dict[str, tuple[int, ...]], shard_bytes: int) -> tuple[list[str], list[list[str]]]:
    """Hugging Face shard file names and the bf16 tensors in each, filled in order up to `shard_bytes`."""
    shards: list[list[str]] = [[]]
    size = 0
    for name, shape in shapes.items():
        nbytes = 2 * _numel(shape)
        if shards[-1] and size + nbytes > shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += nbytes
    files = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    return files, shards


def llama7b_shapes(
    layers: int = 32, hidden: int = 4096, mlp: int = 11008, vocab: int = 32000
) -> dict[str, tuple[int, ...]]:
    """Every tensor of a Llama-2-7B checkpoint, in Hugging Face order (norms are 1-D)."""
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (vocab, hidden)}
    for i in range(layers):
        p = f"model.layers.{i}"
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            shapes[f"{p}.self_attn.{name}.weight"] = (hidden, hidden)
        shapes[f"{p}.mlp.gate_proj.weight"] = (mlp, hidden)
        shapes[f"{p}.mlp.up_proj.weight"] = (mlp, hidden)
        shapes[f"{p}.mlp.down_proj.weight"] = (hidden, mlp)
        shapes[f"{p}.input_layernorm.weight"] = (hidden,)
        shapes[f"{p}.post_attention_layernorm.weight"] = (hidden,)
    shapes["model.norm.weight"] = (hidden,)
    shapes["lm_head.weight"] = (vocab, hidden)
    return shapes


def llama7b_pair(
    layers: int = 32,
    root: Path | None = None,
    shard_bytes: int = 2 * 1024**3,
    update_rank: int = 16,
    progress: bool = False,
) -> tuple[Path, Path]:
    """A Llama-2-7B-shaped bf16 pair (hidden 4096, MLP 11008, vocab 32000; 32 layers: 224 projections, 13.5 GB
    per checkpoint) as sharded Hugging Face directories (config.json, model.safetensors.index.json, shards of
    at most `shard_bytes`).

    Streaming: the shard headers are planned from the shapes, then each tensor is generated, converted and
    appended to both checkpoints' open shards, so memory holds a few tensors, never a shard. base ~ N(0, 0.02²);
    tuned = base + a rank-`update_rank` update (entries ~5e-4, a few bf16 steps of the base) + N(0, 1e-4²) noise,
    rounded to bf16. The noise comes from one pre-drawn pool (offset per tensor), which halves the time spent in
    the random-number generator; every draw is seeded, so the files are the same every time. `layers` < 32 gives
    a smaller pair of the same shapes (for testing). Reused when complete (a `.complete` marker).
    """
    from transformers import LlamaConfig

    root = root or OUT / f"llama2-7b-shaped-{layers}l"
    base, tuned = root / "base", root / "tuned"
    if (root / ".complete").is_file():
        return base, tuned
    shapes = llama7b_shapes(layers)
    files, shards = plan_shards(shapes, shard_bytes)
    index = {
        "metadata": {"total_size": 2 * sum(_numel(s) for s in shapes.values())},
        "weight_map": {name: files[i] for i, names in enumerate(shards) for name in names},
    }
    config = LlamaConfig(
        vocab_size=32000,
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=layers,
        num_attention_heads=32,
        num_key_value_heads=32,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
        torch_dtype="bfloat16",
    )
    for directory in (base, tuned):
        directory.mkdir(parents=True, exist_ok=True)
        config.save_pretrained(directory)
        (directory / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    generator = torch.Generator().manual_seed(7)
    pool = torch.randn(max(_numel(s) for s in shapes.values()) + 1_000_003, generator=generator) * 1e-4
    start = time.perf_counter()
    for shard, names in zip(files, shards, strict=True):
        header = {n: list(shapes[n]) for n in names}
        with _ShardWriter(base / shard, header) as out_base, _ShardWriter(tuned / shard, header) as out_tuned:
            for name in names:
                w_base, w_tuned = _pair_tensor(shapes[name], generator, pool, update_rank)
                out_base.write(name, w_base)
                out_tuned.write(name, w_tuned)
        if progress:
            print(f"  {shard}: {len(names)} tensors, {time.perf_counter() - start:.0f} s", flush=True)
    (root / ".complete").touch()
    return base, tuned


def _numel(shape: tuple[int, ...]) -> int:
    return math.prod(shape)


def _pair_tensor(
    shape: tuple[int, ...], generator: torch.Generator, pool: torch.Tensor, rank: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """One base tensor and its tuned version, both bf16 (1-D tensors: ones, unchanged)."""
    if len(shape) == 1:
        ones = torch.ones(shape, dtype=torch.bfloat16)
        return ones, ones
    rows, cols = shape
    work = torch.randn(shape, generator=generator)
    work *= 0.02
    w_base = work.to(torch.bfloat16)
    work.copy_(w_base)  # the tuned weights start from the stored base values
    # ΔW = A·B with A (rows × r), B (r × cols) ~ N(0, 1): entries ~ N(0, r·s²), s = 5e-4/√r
    a = torch.randn(rows, rank, generator=generator)
    b = torch.randn(rank, cols, generator=generator)
    work.addmm_(a, b, alpha=5e-4 / math.sqrt(rank))
    offset = int(torch.randint(0, 1_000_000, (1,), generator=generator))
    work += pool[offset : offset + rows * cols].view(rows, cols)
    return w_base, work.to(torch.bfloat16)


class _ShardWriter:
    """A safetensors file written tensor by tensor: the header (all shapes known, bf16) first, then the data
    in header order."""

    def __init__(self, path: Path, shapes: dict[str, list[int]]) -> None:
        self.path, self.order, self.next = path, list(shapes), 0
        header: dict[str, object] = {"__metadata__": {"format": "pt"}}
        offset = 0
        for name, shape in shapes.items():
            end = offset + 2 * _numel(tuple(shape))
            header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [offset, end]}
            offset = end
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        self.handle = path.open("wb")
        self.handle.write(struct.pack("<Q", len(raw)) + raw)

    def write(self, name: str, tensor: torch.Tensor) -> None:
        if self.order[self.next] != name or tensor.dtype != torch.bfloat16:
            raise ValueError(
                f"{self.path}: expected {self.order[self.next]} (bf16), got {name} ({tensor.dtype})"
            )
        self.handle.write(tensor.contiguous().view(torch.int16).numpy().data)  # no copy
        self.next += 1

    def __enter__(self) -> _ShardWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.close()
        if exc[0] is None and self.next != len(self.order):
            raise ValueError(f"{self.path}: {len(self.order) - self.next} tensors not written")


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
