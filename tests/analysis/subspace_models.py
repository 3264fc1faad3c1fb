"""Checkpoints with planted subspace structure, for the intruder, subspace and extract tests and their CLIs.

Dense checkpoints with the base's top singular vectors rotated away (a known intruder count), deltas planted in
the base's own top or bottom singular directions (a known placement), real peft LoRA adapters of the tiny Llama,
and those adapters merged by peft itself.
"""

from __future__ import annotations

from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file, save_file
from scipy.linalg import hadamard

from tests.conftest import build_tiny_llama

BLOCK = 16  # Hadamard block: every rotated vector has |cos| = 1/4 with each of 16 base vectors
Q_PROJ = "model.layers.0.self_attn.q_proj.weight"


def orthogonal(n: int, seed: int) -> torch.Tensor:
    """A seeded (n, n) float64 orthogonal matrix."""
    generator = torch.Generator().manual_seed(seed)
    return torch.linalg.qr(torch.randn(n, n, generator=generator, dtype=torch.float64))[0]


def planted_rotation(u: torch.Tensor, planted: int) -> torch.Tensor:
    """U Q: the first `planted` columns and the last 16 − planted mixed by a Hadamard block, others kept.

    Mixed columns have |cos| = 1/4 with 16 of U's columns and 0 with the rest, so with σ descending the
    first `planted` of them are intruders among the top k and the mixed tail stays at the bottom.
    """
    m = u.shape[1]
    block = list(range(planted)) + list(range(m - (BLOCK - planted), m))
    q = torch.eye(m, dtype=torch.float64)
    h = torch.tensor(hadamard(BLOCK), dtype=torch.float64) / BLOCK**0.5
    q[torch.tensor(block)[:, None], torch.tensor(block)[None, :]] = h
    return u @ q


def rotate_top(weight: torch.Tensor, planted: int) -> torch.Tensor:
    """W' = (U Q) Σ Vᵀ from W = U Σ Vᵀ: W's spectrum with `planted` top left vectors rotated away."""
    u, s, vh = torch.linalg.svd(weight.double(), full_matrices=False)
    return (planted_rotation(u, planted) * s) @ vh


def planted_in_base(weight: torch.Tensor, sigma: list[float], where: str) -> torch.Tensor:
    """ΔW = U_k diag(σ) V_kᵀ (float64) in W's own top-k (`where="top"`) or bottom-k (`"bottom"`) singular
    directions, k = len(σ), from W's float64 SVD (W upcast exactly)."""
    u, _, vh = torch.linalg.svd(weight.double(), full_matrices=False)
    k = len(sigma)
    columns = slice(0, k) if where == "top" else slice(u.shape[1] - k, u.shape[1])
    return (u[:, columns] * torch.tensor(sigma, dtype=torch.float64)) @ vh[columns]


def save_tuned(model_dir: Path, out_dir: Path, deltas: dict[str, torch.Tensor] | None = None) -> Path:
    """Copy a saved model directory, replacing the named weights (fp32 safetensors)."""
    tensors = load_file(str(model_dir / "model.safetensors"))
    for name, weight in (deltas or {}).items():
        tensors[name] = weight.to(torch.float32).contiguous()
    out_dir.mkdir(parents=True)
    save_file(tensors, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    (out_dir / "config.json").write_text((model_dir / "config.json").read_text())
    return out_dir


def save_lora(out_dir: Path, rank: int = 4, alpha: float = 8.0, seed: int = 1, **config: object) -> Path:
    """A real peft LoRA adapter of the tiny Llama with non-zero B (attention and up_proj)."""
    model = get_peft_model(
        build_tiny_llama(),
        LoraConfig(r=rank, lora_alpha=alpha, target_modules=["q_proj", "v_proj", "up_proj"], **config),  # type: ignore[arg-type]
    )
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
    model.save_pretrained(out_dir)
    return out_dir


def merged_dir(base_dir: Path, adapter_dir: Path, out_dir: Path) -> Path:
    """The adapter merged into the base by peft itself, saved as a dense checkpoint."""
    model = PeftModel.from_pretrained(build_tiny_llama(), adapter_dir).merge_and_unload()
    model.save_pretrained(out_dir)
    return out_dir
