"""Deltas of known rank and singular values planted into tiny checkpoints, read back through `spectrum()`.

fp32 storage: every σ and every rank measure must come back exact to 1e-5 relative (bf16 storage and the noise
floor: test_planted_bf16.py).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from deltarank.analysis.engine import spectrum
from deltarank.analysis.maths.reference import random_energy_rank
from deltarank.analysis.results import SpectrumResult
from deltarank.io.source import open_checkpoint
from tests.conftest import build_tiny_llama
from tests.planting import (
    by_name,
    full_spectrum,
    hadamard_delta,
    on_grid,
    plant,
    planted_delta,
    save_safetensors,
    shuffled,
    weights_of,
    write_safetensors_bytes,
)

SIGMA_RTOL = 1e-5  # the bound for fp32 storage, on σ and on every rank measure
FLOAT64_RTOL = 1e-12  # exact planting + float64 compute
BASE_NORM_RTOL = 1e-6

Q0 = "model.layers.0.self_attn.q_proj.weight"
K0 = "model.layers.0.self_attn.k_proj.weight"
DOWN0 = "model.layers.0.mlp.down_proj.weight"
V1 = "model.layers.1.self_attn.v_proj.weight"
O1 = "model.layers.1.self_attn.o_proj.weight"
GATE1 = "model.layers.1.mlp.gate_proj.weight"

# Planted σ per weight of the tiny Llama (hidden 32, MLP 64, k/v 16 × 32).
FP32_PLANTS: dict[str, list[float]] = {
    Q0: [0.2, 0.15, 0.1, 0.05],  # σ ∝ 4, 3, 2, 1: the hand-computed ranks below
    K0: [0.3],  # rank 1
    DOWN0: [0.2 * 0.7**i for i in range(8)],  # rank 8, geometric
    O1: list(np.linspace(0.3, 0.02, 16)),  # rank 16 of 32
    GATE1: list(np.linspace(0.1, 0.01, 32)),  # full rank 32
}


def _expected_ranks(sigma: np.ndarray, k: int) -> dict[str, float]:
    """Every rank measure of a planted spectrum, written out from the definitions (independent of ranks.py)."""
    energy = sigma**2
    cumulative = np.cumsum(energy) / energy.sum()
    p = sigma[sigma > 0] / sigma.sum()
    return {
        "energy_50": int(np.argmax(cumulative >= 0.5) + 1),
        "energy_80": int(np.argmax(cumulative >= 0.8) + 1),
        "energy_90": int(np.argmax(cumulative >= 0.9) + 1),
        "energy_95": int(np.argmax(cumulative >= 0.95) + 1),
        "energy_99": int(np.argmax(cumulative >= 0.99) + 1),
        "entropy": float(np.exp(-np.sum(p * np.log(p)))),
        "stable": float(energy.sum() / energy.max()),
        "participation": float(energy.sum() ** 2 / np.sum(energy**2)),
        "numerical": k,
        "noise_floor": k,
    }


@pytest.fixture(scope="module", params=["gram", "svd"])
def fp32_run(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[SpectrumResult, dict[str, torch.Tensor]]:
    """Base and tuned fp32 files, the tuned one written in shuffled tensor order; both exact solvers."""
    root = tmp_path_factory.mktemp("fp32")
    base = weights_of(build_tiny_llama())
    deltas = {
        name: planted_delta(tuple(base[name].shape), sigma, seed=i)
        for i, (name, sigma) in enumerate(FP32_PLANTS.items())
    }
    save_safetensors(root / "base.safetensors", base)
    write_safetensors_bytes(root / "tuned.safetensors", shuffled(plant(base, deltas, torch.float32), seed=3))
    result = spectrum(
        root / "base.safetensors", root / "tuned.safetensors", device="cpu", solver=request.param
    )
    return result, base


@pytest.mark.parametrize("name", list(FP32_PLANTS))
def test_fp32_sigma_and_every_rank_exact(fp32_run: tuple[SpectrumResult, dict], name: str) -> None:
    result, base = fp32_run
    record = by_name(result)[name]
    k = len(FP32_PLANTS[name])
    expected_sigma = full_spectrum(tuple(base[name].shape), FP32_PLANTS[name])
    observed = np.asarray(record.singular_values)
    # Planted σ: relative; the planted zeros: relative to σ₁.
    np.testing.assert_allclose(observed[:k], expected_sigma[:k], rtol=SIGMA_RTOL, atol=0.0)
    assert np.all(np.abs(observed[k:]) <= SIGMA_RTOL * expected_sigma[0])
    expected = _expected_ranks(expected_sigma, k)
    assert set(record.ranks) == set(expected)
    for key, value in expected.items():
        assert record.ranks[key] == pytest.approx(value, rel=SIGMA_RTOL), key
    assert record.delta_norm == pytest.approx(float(np.linalg.norm(expected_sigma)), rel=SIGMA_RTOL)
    assert record.kind == "dense" and record.base_dtype == record.tuned_dtype == "F32"


def test_fp32_hand_computed_ranks_of_4_3_2_1(fp32_run: tuple[SpectrumResult, dict]) -> None:
    ranks = by_name(fp32_run[0])[Q0].ranks
    assert (ranks["energy_50"], ranks["energy_90"], ranks["energy_99"]) == (1, 3, 4)
    p = np.array([0.4, 0.3, 0.2, 0.1])
    assert ranks["entropy"] == pytest.approx(math.exp(-np.sum(p * np.log(p))), rel=SIGMA_RTOL)  # 3.5961
    assert ranks["stable"] == pytest.approx(30 / 16, rel=SIGMA_RTOL)
    assert ranks["participation"] == pytest.approx(900 / 354, rel=SIGMA_RTOL)
    assert ranks["numerical"] == ranks["noise_floor"] == 4


def test_fp32_record_fields(fp32_run: tuple[SpectrumResult, dict]) -> None:
    result, base = fp32_run
    record = by_name(result)[DOWN0]
    assert (record.layer, record.module, record.shape) == (0, "down_proj", (32, 64))
    assert record.random_energy_90 == random_energy_rank(32, 64, 0.9)
    expected_base_norm = float(torch.linalg.vector_norm(base[DOWN0].double()))
    assert record.base_norm == pytest.approx(expected_base_norm, rel=BASE_NORM_RTOL)
    assert record.erased_fraction == 0.0  # a dense planted delta changes every entry
    assert record.at_noise_level is False


def test_unplanted_weights_have_zero_delta(fp32_run: tuple[SpectrumResult, dict]) -> None:
    result, _ = fp32_run
    records = by_name(result)
    unchanged = [records[n] for n in records if n not in FP32_PLANTS]
    assert len(unchanged) == 14 - len(FP32_PLANTS)  # 7 block matrices × 2 layers
    for record in unchanged:
        assert record.delta_norm == 0.0
        assert set(record.singular_values) == {0.0}
        assert all(v == 0 for v in record.ranks.values())
        assert record.erased_fraction == 1.0
        assert record.at_noise_level is False


def test_default_selection_and_order(fp32_run: tuple[SpectrumResult, dict]) -> None:
    result, base = fp32_run
    base_order = open_checkpoint(result.base).names()
    block_2d = [n for n in base_order if base[n].ndim == 2 and ".layers." in n]
    assert len(block_2d) == 14
    tuned_order = [n for n in open_checkpoint(result.tuned).names() if n in block_2d]
    assert tuned_order != block_2d  # the tuned file really is in another order
    assert [m.name for m in result.matrices] == block_2d  # base order, paired by name
    assert result.skipped == ()


def test_json_round_trip_of_a_real_run(fp32_run: tuple[SpectrumResult, dict], tmp_path: Path) -> None:
    result, _ = fp32_run
    result.to_json(tmp_path / "s.json")
    assert SpectrumResult.from_json(tmp_path / "s.json") == result  # every float survives exactly


@pytest.mark.parametrize("layout", ["file", "hf_dir", "sharded_dir"])
def test_every_safetensors_layout_gives_the_planted_sigma(tmp_path: Path, layout: str) -> None:
    model = build_tiny_llama()
    base = weights_of(model)
    plants = {Q0: FP32_PLANTS[Q0], DOWN0: FP32_PLANTS[DOWN0]}
    deltas = {n: planted_delta(tuple(base[n].shape), s, seed=i) for i, (n, s) in enumerate(plants.items())}
    tuned = plant(base, deltas, torch.float32)
    save_safetensors(tmp_path / "base.safetensors", base)
    if layout == "file":
        target = save_safetensors(tmp_path / "tuned.safetensors", tuned)
    else:
        model.load_state_dict(tuned)
        target = tmp_path / "tuned"
        model.save_pretrained(target, max_shard_size="40KB" if layout == "sharded_dir" else "1GB")
        assert (target / "model.safetensors.index.json").exists() == (layout == "sharded_dir")
    records = by_name(spectrum(tmp_path / "base.safetensors", target, device="cpu"))
    assert len(records) == 14
    for name, sigma in plants.items():
        np.testing.assert_allclose(records[name].singular_values[: len(sigma)], sigma, rtol=SIGMA_RTOL)
        assert records[name].ranks["noise_floor"] == len(sigma)


def test_erased_fraction_counts_unchanged_entries(tmp_path: Path) -> None:
    base = weights_of(build_tiny_llama())
    delta = torch.zeros(16, 32, dtype=torch.float64)
    delta[:8] = planted_delta((8, 32), [0.25], seed=5)  # rank 1 living in the first 8 of 16 rows
    save_safetensors(tmp_path / "base.safetensors", base)
    save_safetensors(tmp_path / "tuned.safetensors", plant(base, {V1: delta}, torch.float32))
    record = by_name(spectrum(tmp_path / "base.safetensors", tmp_path / "tuned.safetensors", device="cpu"))[
        V1
    ]
    assert record.erased_fraction == 0.5
    assert record.singular_values[0] == pytest.approx(0.25, rel=SIGMA_RTOL)
    assert record.ranks["noise_floor"] == 1


def test_float64_path_is_exact_on_an_exactly_stored_delta(tmp_path: Path) -> None:
    """A Hadamard-built delta on a dyadic grid is stored exactly in fp32; float64 then recovers σ to 1e-12."""
    base = {name: on_grid(t, grid_bits=16) for name, t in weights_of(build_tiny_llama()).items()}
    delta, sigma = hadamard_delta((32, 32), [4, 3, 2, 1], grid_bits=10)  # σ = c · 2^-10 · 32 = c / 32
    tuned = plant(base, {Q0: delta}, torch.float32)
    assert torch.equal(tuned[Q0].double() - base[Q0].double(), delta)  # the stored delta is exact
    save_safetensors(tmp_path / "base.safetensors", base)
    save_safetensors(tmp_path / "tuned.safetensors", tuned)
    runs = {
        precision: by_name(
            spectrum(
                tmp_path / "base.safetensors",
                tmp_path / "tuned.safetensors",
                device="cpu",
                precision=precision,
                include=r"q_proj",
            )
        )[Q0]
        for precision in ("float64", "float32")
    }
    exact = runs["float64"]
    np.testing.assert_allclose(exact.singular_values[:4], sigma, rtol=FLOAT64_RTOL)
    assert max(exact.singular_values[4:]) <= FLOAT64_RTOL * sigma[0]
    expected = _expected_ranks(full_spectrum((32, 32), sigma), 4)
    assert exact.ranks["entropy"] == pytest.approx(expected["entropy"], rel=FLOAT64_RTOL)
    # float32 decomposition leaves round-off in the zero σ (so the float64 path is not a no-op).
    assert max(runs["float32"].singular_values[4:]) > FLOAT64_RTOL * sigma[0]
