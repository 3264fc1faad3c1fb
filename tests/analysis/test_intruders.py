"""Intruder dimensions: planted rotations of the base's top singular vectors give the planted count."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from deltarank.analysis.tools.intruders import (
    EPSILON_SWEEP,
    IntruderResult,
    count_intruders,
    intruders,
    max_cosines,
    weight_intruders,
)
from deltarank.errors import DeltarankError
from tests.analysis.subspace_models import (
    Q_PROJ,
    merged_dir,
    orthogonal,
    planted_rotation,
    rotate_top,
    save_lora,
    save_tuned,
)

MIXED_COS = 0.25
COS_TOL = 1e-5


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
