"""`placement` on real tiny checkpoints: deltas planted in the stored base's own top or bottom singular
directions land there, unchanged weights have no share, an adapter is placed as its peft merge."""

from __future__ import annotations

from pathlib import Path

import pytest
from safetensors.torch import load_file

from deltarank.analysis.results import read_result
from deltarank.analysis.tools.placement import PlacementResult, placement
from deltarank.errors import OptionError
from tests.analysis.subspace_models import Q_PROJ, merged_dir, planted_in_base, save_lora, save_tuned

UP_PROJ = "model.layers.1.mlp.up_proj.weight"  # (64, 32): tall
DOWN_PROJ = "model.layers.0.mlp.down_proj.weight"  # (32, 64): wide
PLANTED = [0.5, 0.5, 0.4, 0.4]  # r₀.₉ = 4 (the top three keep 0.41/0.57 = 72%)
# Shares are "exact" to 1e-6 in both precisions (float64: ~1e-15; float32: ~2e-7, the rounding of the products
# of a float32 SVD's vectors). Cosines of identical float32 subspaces sit ~n·eps₃₂ ≈ 1e-6 below 1: a float32
# SVD's U is orthonormal only to that.
SHARE_TOLERANCE = 1e-6
COSINE_TOLERANCE = {"float64": 1e-6, "float32": 1e-5}


def planted_checkpoint(base_dir: Path, out_dir: Path, where: str) -> Path:
    """The base with PLANTED added in the stored base weights' own top or bottom directions of three matrices."""
    stored = load_file(str(base_dir / "model.safetensors"))
    tuned = {
        name: stored[name].double() + planted_in_base(stored[name], PLANTED, where)
        for name in (Q_PROJ, UP_PROJ, DOWN_PROJ)
    }
    return save_tuned(base_dir, out_dir, tuned)


@pytest.mark.parametrize("precision", ["float64", "float32"])
@pytest.mark.parametrize(("where", "expected"), [("top", (1.0, 0.0)), ("bottom", (0.0, 1.0))])
def test_planted_checkpoint(
    tiny_model_dir: Path, tmp_path: Path, where: str, expected: tuple[float, float], precision: str
) -> None:
    tuned = planted_checkpoint(tiny_model_dir, tmp_path / "tuned", where)
    result = placement(tiny_model_dir, tuned, sizes=[4, 8], device="cpu", precision=precision)
    by_name = {m.name: m for m in result.matrices}
    tolerance = SHARE_TOLERANCE
    for name in (Q_PROJ, UP_PROJ, DOWN_PROJ):
        record = by_name.pop(name)
        assert record.energy_90 == 4 and record.kind == "dense"
        assert (record.base_dtype, record.tuned_dtype) == ("F32", "F32")  # as stored
        for key in ("energy_90", "k4"):
            entry = record.at(key)
            assert entry is not None and entry.k == 4
            assert (entry.left_top, entry.left_bottom) == pytest.approx(expected, abs=tolerance)
            assert (entry.right_top, entry.right_bottom) == pytest.approx(expected, abs=tolerance)
            assert (entry.left_chance, entry.right_chance) == (4 / record.shape[0], 4 / record.shape[1])
        k8 = record.at("k8")  # the 4 planted directions inside W₀'s top (bottom) 8
        assert k8 is not None and (k8.left_top, k8.left_bottom) == pytest.approx(expected, abs=tolerance)
    for record in by_name.values():  # unchanged weights: no share, no r₀.₉, the same subspaces and σ
        assert record.delta_norm == 0.0 and record.energy_90 == 0 and record.at("energy_90") is None
        entry = record.at("k4")
        assert entry is not None and entry.left_top is None and entry.right_bottom is None
        assert entry.left_mean_cos2 == pytest.approx(1.0, abs=COSINE_TOLERANCE[precision])
        assert record.sigma_change == pytest.approx([0.0] * 8, abs=1e-6)
    assert result.sizes == (4, 8) and result.precision == precision and result.sigma_top == 8
    q_proj = result.module("q_proj")
    assert q_proj is not None and q_proj.matrices == 2
    assert q_proj.subspaces["energy_90"]["left_top"]["layers"] == 1  # only layer 0 has a ΔW
    assert q_proj.subspaces["k4"]["left_chance"]["median"] == pytest.approx(4 / 32)
    again = read_result(result.to_json())
    assert isinstance(again, PlacementResult) and again == result


def test_adapter_is_placed_as_its_peft_merge(tiny_model_dir: Path, tmp_path: Path) -> None:
    adapter = save_lora(tmp_path / "lora", rank=4)
    merged = merged_dir(tiny_model_dir, adapter, tmp_path / "merged")
    from_adapter = placement(tiny_model_dir, adapter, sizes=[2], device="cpu")
    from_merged = placement(
        tiny_model_dir, merged, sizes=[2], device="cpu", include=r"(q_proj|v_proj|up_proj)"
    )
    assert [m.name for m in from_adapter.matrices] == [m.name for m in from_merged.matrices]
    for a, b in zip(from_adapter.matrices, from_merged.matrices, strict=True):
        assert a.kind == "lora" and b.kind == "dense"
        assert a.energy_90 == b.energy_90 <= 4  # a rank-4 ΔW
        for x, y in zip(a.subspaces, b.subspaces, strict=True):
            assert x.key == y.key
            assert (x.left_top, x.right_top) == pytest.approx((y.left_top, y.right_top), abs=1e-4)
            assert x.left_cosines == pytest.approx(y.left_cosines, abs=1e-4)
        assert a.sigma_change == pytest.approx(b.sigma_change, abs=1e-5)


def test_bad_sizes_are_refused_before_reading(tmp_path: Path) -> None:
    with pytest.raises(OptionError, match="--sizes"):
        placement(tmp_path / "missing", tmp_path / "missing", sizes=[0])
