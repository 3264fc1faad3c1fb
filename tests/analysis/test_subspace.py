"""Subspace similarity φ: 1 for a subspace with itself, 0 for orthogonal ones, exact LoRA fast path."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from deltarank.analysis.maths.svd import factored_svd
from deltarank.analysis.tools.similarity import (
    SimilarityResult,
    check_tops,
    clip_tops,
    overlap_energy,
    phi,
    phi_grid,
    similarity,
)
from deltarank.errors import DeltarankError
from tests.analysis.subspace_models import merged_dir, orthogonal, save_lora, save_tuned

PHI_TOL = 1e-6
FAST_PATH_TOL = 1e-4  # float32 SVD of a small dense product vs the factor route
Q_PROJ = "model.layers.0.self_attn.q_proj.weight"


def test_phi_of_subspace_with_itself_is_one() -> None:
    u = orthogonal(20, 0)[:, :8]
    grid, diagonal = phi_grid(u, u, [1, 2, 4, 8], [1, 2, 4, 8])
    assert diagonal == pytest.approx([1.0] * 8, abs=PHI_TOL)
    # Nested subspaces: span(U_i) ⊂ span(U_j), so ‖U_iᵀU_j‖² = min(i, j) and φ = 1 everywhere.
    assert [v for row in grid for v in row] == pytest.approx([1.0] * 16, abs=PHI_TOL)


def test_phi_of_orthogonal_subspaces_is_zero() -> None:
    q = orthogonal(20, 1)
    grid, diagonal = phi_grid(q[:, :8], q[:, 8:16], [1, 4, 8], [2, 8])
    assert [v for row in grid for v in row] == pytest.approx([0.0] * 6, abs=PHI_TOL)
    assert diagonal == pytest.approx([0.0] * 8, abs=PHI_TOL)


def test_planted_partial_overlap() -> None:
    e = torch.eye(6, dtype=torch.float64)
    u_a = e[:, [0, 1]]
    u_b = e[:, [0, 2, 1]]  # shares the 1st vector, the 2nd only at j = 3
    assert phi(u_a, u_b, 2, 2) == pytest.approx(0.5)
    assert phi(u_a, u_b, 2, 3) == pytest.approx(1.0)
    assert phi(u_a, u_b, 1, 1) == pytest.approx(1.0)
    energy = overlap_energy(u_a, u_b)  # ‖U_Aᵢᵀ U_Bⱼ‖_F²
    assert energy.tolist() == [[1.0, 1.0, 1.0], [1.0, 1.0, 2.0]]
    rotated = torch.cat([(e[:, :1] + e[:, 3:4]) / 2**0.5], dim=1)  # 45° from e₁
    assert phi(e[:, :1], rotated, 1, 1) == pytest.approx(0.5)


def test_lora_fast_path_matches_dense_svd() -> None:
    generator = torch.Generator().manual_seed(0)
    b, a = torch.randn(24, 4, generator=generator), torch.randn(4, 40, generator=generator)
    for scale in (2.0, -0.5):
        u, s, v = factored_svd(b.double(), a.double(), scale)
        assert (u * s) @ v.T == pytest.approx((scale * b.double() @ a.double()), abs=1e-10)
        u_d, s_d, _ = torch.linalg.svd(scale * b.double() @ a.double(), full_matrices=False)
        assert s.tolist() == pytest.approx(s_d[:4].tolist())
        assert phi(u, u_d, 4, 4) == pytest.approx(1.0)


def test_clip_and_check_tops() -> None:
    assert clip_tops((1, 2, 4, 8, 16), 12) == (1, 2, 4, 8, 12)
    assert clip_tops((1, 2, 4), 3) == (1, 2, 3)
    assert check_tops([8, 1, 2, 2]) == (1, 2, 8)
    with pytest.raises(DeltarankError, match="positive"):
        check_tops([0, 2])


def test_lora_against_its_own_merge(tiny_model_dir: Path, tmp_path: Path) -> None:
    adapter = save_lora(tmp_path / "lora", rank=4)
    merged = merged_dir(tiny_model_dir, adapter, tmp_path / "merged")
    result = similarity(tiny_model_dir, adapter, merged, top=[1, 2, 4, 8], device="cpu")
    assert len(result.matrices) == 6  # q, v, up in 2 layers; the other merged matrices are unchanged
    for m in result.matrices:
        assert (m.kind_a, m.kind_b, m.available_a) == ("lora", "dense", 4)
        assert m.tops_a == (1, 2, 4)
        assert m.diagonal[:4] == pytest.approx([1.0] * 4, abs=FAST_PATH_TOL)
        assert m.phi(4, 4) == pytest.approx(1.0, abs=FAST_PATH_TOL)
    assert {s.reason for s in result.skipped} == {"only in B"} and len(result.skipped) == 8


def test_orthogonal_deltas_and_right_side(tiny_model_dir: Path, tmp_path: Path) -> None:
    base = load_file(str(tiny_model_dir / "model.safetensors"))[Q_PROJ].double()
    q_out, q_in = orthogonal(32, 3), orthogonal(32, 4)
    delta_a = (q_out[:, :4] * 0.5) @ q_in[:, :4].T
    delta_b = (q_out[:, 4:8] * 0.5) @ q_in[:, :4].T  # orthogonal outputs, same inputs
    tuned_a = save_tuned(tiny_model_dir, tmp_path / "a", {Q_PROJ: base + delta_a})
    tuned_b = save_tuned(tiny_model_dir, tmp_path / "b", {Q_PROJ: base + delta_b})
    left = similarity(tiny_model_dir, tuned_a, tuned_b, top=[1, 2, 4], device="cpu")
    (m,) = left.matrices
    assert m.available_a == m.available_b == 4
    assert [v for row in m.grid for v in row] == pytest.approx([0.0] * 9, abs=1e-3)
    right = similarity(tiny_model_dir, tuned_a, tuned_b, top=[4], side="right", device="cpu")
    assert right.matrices[0].phi(4, 4) == pytest.approx(1.0, abs=1e-3)


def test_json_round_trip_and_summaries(tiny_model_dir: Path, tmp_path: Path) -> None:
    adapter = save_lora(tmp_path / "lora", rank=4)
    other = save_lora(tmp_path / "other", rank=2, seed=7)
    result = similarity(tiny_model_dir, adapter, other, top=[1, 2, 4], device="cpu")
    path = tmp_path / "sim.json"
    result.to_json(path)
    again = SimilarityResult.from_json(path)
    assert again == result and again.to_dict()["schema"] == "deltarank.similarity/2"
    rows, cols, grid = result.module_grid("q_proj")
    assert (rows, cols, grid.shape) == ((1, 2, 4), (1, 2), (3, 2))
    means = result.module_means(2)
    assert set(means) == {"q_proj", "v_proj", "up_proj"} and all(0.0 <= v <= 1.0 for v in means.values())


def test_nothing_in_common_is_an_error(tiny_model_dir: Path, tmp_path: Path) -> None:
    adapter = save_lora(tmp_path / "lora")
    with pytest.raises(DeltarankError, match="no matrix"):
        similarity(tiny_model_dir, adapter, tiny_model_dir, device="cpu")
