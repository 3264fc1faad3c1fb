"""bf16 storage: rounding noise makes a planted low-rank ΔW full rank, so `numerical` reads near full rank while
`noise_floor` (σ above the rounding-noise edge) still equals the planted rank; pure rounding noise reads 0."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from deltarank.analysis.engine import spectrum
from deltarank.analysis.results import SpectrumResult
from tests.conftest import build_tiny_llama
from tests.planting import by_name, cast, plant, planted_delta, save_safetensors, weights_of

Q0 = "model.layers.0.self_attn.q_proj.weight"
K0 = "model.layers.0.self_attn.k_proj.weight"
DOWN0 = "model.layers.0.mlp.down_proj.weight"
GATE1 = "model.layers.1.mlp.gate_proj.weight"
UP1 = "model.layers.1.mlp.up_proj.weight"

HIDDEN_64 = {"hidden_size": 64, "intermediate_size": 128}
# Planted σ well above the bf16 noise edge of these 64-wide matrices (edge ≈ 7e-4 for weights of std 0.02).
BF16_PLANTS: dict[str, list[float]] = {
    Q0: [0.05, 0.04, 0.03, 0.02],
    K0: [0.04],
    DOWN0: list(np.linspace(0.05, 0.01, 8)),
    GATE1: [0.06, 0.03],
}


@pytest.fixture(scope="module")
def bf16_run(tmp_path_factory: pytest.TempPathFactory) -> SpectrumResult:
    """Both checkpoints stored in bf16: tuned = bf16(base + ΔW)."""
    root = tmp_path_factory.mktemp("bf16")
    base = cast(weights_of(build_tiny_llama(**HIDDEN_64)), torch.bfloat16)
    deltas = {
        name: planted_delta(tuple(base[name].shape), s, seed=i)
        for i, (name, s) in enumerate(BF16_PLANTS.items())
    }
    save_safetensors(root / "base.safetensors", base)
    save_safetensors(root / "tuned.safetensors", plant(base, deltas, torch.bfloat16))
    return spectrum(root / "base.safetensors", root / "tuned.safetensors", device="cpu")


@pytest.mark.parametrize("name", list(BF16_PLANTS))
def test_bf16_noise_floor_equals_planted_rank(bf16_run: SpectrumResult, name: str) -> None:
    record = by_name(bf16_run)[name]
    n = min(record.shape)
    assert record.base_dtype == record.tuned_dtype == "BF16"
    assert record.ranks["noise_floor"] == len(BF16_PLANTS[name])
    assert record.ranks["numerical"] >= 0.9 * n  # rounding noise is full rank
    # Every planted σ survives above the edge; the first noise σ sits below it.
    assert (
        record.singular_values[len(BF16_PLANTS[name]) - 1]
        > record.noise_edge
        > record.singular_values[len(BF16_PLANTS[name])]
    )
    assert record.at_noise_level is False


def test_bf16_untouched_weights_are_exactly_zero(bf16_run: SpectrumResult) -> None:
    # Same bf16 bits in base and tuned: ΔW = 0, no noise at all.
    for record in bf16_run.matrices:
        if record.name not in BF16_PLANTS:
            assert (
                record.delta_norm == 0.0
                and record.ranks["noise_floor"] == 0
                and record.ranks["numerical"] == 0
            )


def test_pure_rounding_noise_delta_has_noise_floor_zero(tmp_path: Path) -> None:
    """Tuned = the fp32 base rounded to bf16: ΔW is rounding noise only."""
    base = weights_of(build_tiny_llama(**HIDDEN_64))
    save_safetensors(tmp_path / "base.safetensors", base)
    save_safetensors(tmp_path / "tuned.safetensors", cast(base, torch.bfloat16))
    result = spectrum(tmp_path / "base.safetensors", tmp_path / "tuned.safetensors", device="cpu")
    assert len(result.matrices) == 14
    for record in result.matrices:
        assert record.delta_norm > 0
        assert record.ranks["noise_floor"] == 0, record.name
        assert record.at_noise_level is True
        assert record.ranks["numerical"] >= 0.9 * min(record.shape)


def test_small_update_energy_rank_inflates_but_noise_floor_holds(tmp_path: Path) -> None:
    """The science notes' warning at tiny scale: ‖ΔW‖/‖W‖ = 2e-3 of a rank-4 delta in a 128 × 64 bf16 weight."""
    base = cast(weights_of(build_tiny_llama(**HIDDEN_64)), torch.bfloat16)
    ratio = 2e-3
    shape = np.array([2.0, 1.75, 1.5, 1.25])  # σ₄ ≈ 1.6 × the noise edge, σ₅ (noise) ≈ 0.55 × it
    sigma = shape / np.linalg.norm(shape) * ratio * float(base[UP1].double().norm())
    save_safetensors(tmp_path / "base.safetensors", base)
    delta = planted_delta((128, 64), sigma, seed=11)
    save_safetensors(tmp_path / "tuned.safetensors", plant(base, {UP1: delta}, torch.bfloat16))
    record = by_name(
        spectrum(
            tmp_path / "base.safetensors", tmp_path / "tuned.safetensors", device="cpu", include="up_proj"
        )
    )[UP1]
    assert record.delta_norm / record.base_norm == pytest.approx(ratio, rel=0.2)  # rounding adds some norm
    assert record.ranks["energy_90"] >= 3 * 4  # 4 planted directions read as 20 of 64
    assert record.ranks["noise_floor"] == 4
    assert (
        record.erased_fraction is not None and record.erased_fraction > 0.5
    )  # most updates below half an ulp
