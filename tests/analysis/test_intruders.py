"""Intruder dimensions: planted rotations of the base's top singular vectors give the planted count."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file, save_file
from scipy.linalg import hadamard

from deltarank.analysis.tools.intruders import (
    EPSILON_SWEEP,
    IntruderResult,
    count_intruders,
    intruders,
    max_cosines,
    weight_intruders,
)
from deltarank.errors import DeltarankError
from tests.conftest import build_tiny_llama

BLOCK = 16  # Hadamard block: every rotated vector has |cos| = 1/4 with each of 16 base vectors
MIXED_COS = 0.25
COS_TOL = 1e-5
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


@pytest.mark.parametrize("planted", [0, 1, 3, 6])
def test_planted_rotation_gives_planted_count(planted: int) -> None:
    u, v = orthogonal(32, 0), orthogonal(32, 1)
    sigma = torch.linspace(10.0, 1.0, 32, dtype=torch.float64)
    base = (u * sigma) @ v.T
    tuned = (planted_rotation(u, planted) * sigma) @ v.T
    max_cos, tuned_sigma = weight_intruders(base, tuned, top_k=10)
    assert len(max_cos) == 10
    assert max_cos[:planted] == pytest.approx([MIXED_COS] * planted, abs=COS_TOL)
    assert max_cos[planted:] == pytest.approx([1.0] * (10 - planted), abs=COS_TOL)
    assert tuned_sigma == pytest.approx(sigma[:10].tolist())
    assert count_intruders(max_cos, 0.5) == planted
    assert count_intruders(max_cos, 0.2) == 0  # below 1/4 nothing is an intruder


def test_max_cosines_and_count() -> None:
    base_u = torch.eye(4, dtype=torch.float64)
    tuned_u = torch.tensor([[1.0, 0.6], [0.0, 0.8], [0.0, 0.0], [0.0, 0.0]], dtype=torch.float64)
    assert max_cosines(base_u, tuned_u).tolist() == pytest.approx([1.0, 0.8])
    assert count_intruders([1.0, 0.8, 0.3], 0.5) == 1
    assert count_intruders([0.5], 0.5) == 0  # strict: |cos| = ε is not an intruder


def test_top_k_clipped_to_matrix_size() -> None:
    max_cos, sigma = weight_intruders(torch.randn(6, 4), torch.randn(6, 4), top_k=10)
    assert len(max_cos) == len(sigma) == 4


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


def test_planted_checkpoint(tiny_model_dir: Path, tmp_path: Path) -> None:
    base_q = load_file(str(tiny_model_dir / "model.safetensors"))[Q_PROJ]
    tuned = save_tuned(tiny_model_dir, tmp_path / "tuned", {Q_PROJ: rotate_top(base_q, 3)})
    result = intruders(tiny_model_dir, tuned, device="cpu")
    counts = {m.name: m.count for m in result.matrices}
    assert counts.pop(Q_PROJ) == 3
    assert set(counts.values()) == {0}  # unchanged weights have no intruder
    q = next(m for m in result.matrices if m.name == Q_PROJ)
    assert q.sweep == {f"{e:g}": (3 if e > MIXED_COS else 0) for e in EPSILON_SWEEP}
    assert result.total() == 3 and result.by_layer("q_proj") == {0: 3, 1: 0}
    assert result.epsilons == EPSILON_SWEEP and q.kind == "dense" and len(q.max_cos) == 10


@pytest.mark.parametrize("use_dora", [False, True])
def test_adapter_merges_like_peft(tiny_model_dir: Path, tmp_path: Path, use_dora: bool) -> None:
    adapter = save_lora(tmp_path / "lora", use_dora=use_dora)
    merged = merged_dir(tiny_model_dir, adapter, tmp_path / "merged")
    from_adapter = intruders(tiny_model_dir, adapter, device="cpu")
    from_merged = intruders(tiny_model_dir, merged, device="cpu", include=r"(q_proj|v_proj|up_proj)")
    assert {m.kind for m in from_adapter.matrices} == {"dora" if use_dora else "lora"}
    assert [m.name for m in from_adapter.matrices] == [m.name for m in from_merged.matrices]
    for a, b in zip(from_adapter.matrices, from_merged.matrices, strict=True):
        assert a.max_cos == pytest.approx(b.max_cos, abs=1e-4)
        assert a.sweep == b.sweep
    assert from_adapter.total() > 0  # a large random LoRA update does produce intruders


def test_json_round_trip(tiny_model_dir: Path, tmp_path: Path) -> None:
    result = intruders(tiny_model_dir, save_lora(tmp_path / "lora"), device="cpu", top_k=5, epsilon=0.3)
    path = tmp_path / "intruders.json"
    result.to_json(path)
    again = IntruderResult.from_json(path)
    assert again == result
    assert again.to_dict()["schema"] == "deltarank.intruders/1"
    assert all(len(m.max_cos) == 5 for m in again.matrices)


@pytest.mark.parametrize(("kwargs", "message"), [({"epsilon": 0.0}, "epsilon"), ({"top_k": 0}, "top-k")])
def test_bad_options(tiny_model_dir: Path, kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(DeltarankError, match=message):
        intruders(tiny_model_dir, tiny_model_dir, **kwargs)  # type: ignore[arg-type]
