"""The sparsity profile of every spectrum record, on planted checkpoints with exact answers: shares of entries
unchanged exactly, within the tolerance and within half an ulp of the stored base weight, and numerical rank ÷
min dimension; for a LoRA adapter, of the formed ΔW."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from deltarank.analysis.engine import spectrum
from deltarank.analysis.results import SparsityProfile, SpectrumResult
from tests.analysis.subspace_models import save_lora
from tests.conftest import TINY_HIDDEN, build_tiny_llama
from tests.planting import by_name, plant, planted_delta, save_safetensors, scattered_changes

UP = "model.layers.0.mlp.up_proj.weight"
Q = "model.layers.0.self_attn.q_proj.weight"
SHAPE = (16, 32)
# 25% of the entries move by 1e-3 (beyond atol = 1e-5), 25% by 1e-6 (within it), the other half not at all.
CHANGES = {1e-3: 0.25, 1e-6: 0.25}
# bf16 base in [1, 2) (grid 2^-7): a change of 0.003 is under half a step and rounds away, 0.01 does not.
BF16_CHANGES = {0.003: 0.25, 0.01: 0.25}


def _base(low: float, seed: int) -> torch.Tensor:
    """(16, 32) float64 weights uniform in [low, 2·low)."""
    return low * (1 + torch.rand(SHAPE, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """fp32: scattered changes in up_proj and a rank-2 delta in q_proj; bf16 base with bf16 and fp32 tuned."""
    root = tmp_path_factory.mktemp("sparsity")
    base = {UP: _base(0.5, 0).float(), Q: (0.02 * _base(1.0, 1)).float()}
    deltas = {UP: scattered_changes(SHAPE, CHANGES), Q: planted_delta(SHAPE, [1.0, 0.5], seed=2)}
    base16 = {UP: _base(1.0, 3).to(torch.bfloat16)}
    moved16 = {UP: scattered_changes(SHAPE, BF16_CHANGES, seed=4)}
    return {
        "base": save_safetensors(root / "base.safetensors", base),
        "tuned": save_safetensors(root / "tuned.safetensors", plant(base, deltas, torch.float32)),
        "base16": save_safetensors(root / "base16.safetensors", base16),
        "tuned16": save_safetensors(root / "tuned16.safetensors", plant(base16, moved16, torch.bfloat16)),
        "tuned32": save_safetensors(root / "tuned32.safetensors", plant(base16, moved16, torch.float32)),
    }


def test_planted_shares_are_exact(pairs: dict[str, Path]) -> None:
    result = spectrum(pairs["base"], pairs["tuned"], device="cpu")
    assert result.sparsity_atol == 1e-5
    up = by_name(result)[UP]
    assert up.sparsity is not None
    assert (up.sparsity.unchanged, up.sparsity.within_atol, up.sparsity.within_rounding) == (0.5, 0.75, 0.5)
    assert up.sparsity.changed == 0.25
    assert up.sparsity.unchanged == up.erased_fraction
    assert up.sparsity.rank_fraction == up.ranks["numerical"] / 16
    # the tolerance is an option: at 1e-7 the 1e-6 changes count as changed
    tight = by_name(spectrum(pairs["base"], pairs["tuned"], device="cpu", sparsity_atol=1e-7))[UP]
    assert tight.sparsity is not None and tight.sparsity.within_atol == 0.5


def test_rank_two_delta_uses_two_sixteenths_of_the_width(pairs: dict[str, Path]) -> None:
    q = by_name(spectrum(pairs["base"], pairs["tuned"], device="cpu"))[Q]
    assert q.ranks["numerical"] == 2
    assert q.sparsity is not None and q.sparsity.rank_fraction == 2 / 16
    assert q.sparsity.unchanged == 0.0  # a dense rank-2 product moves every entry


def test_bf16_changes_below_half_an_ulp_round_away(pairs: dict[str, Path]) -> None:
    """Stored in bf16 the 0.003 steps vanish (exact zeros); stored in fp32 they survive but lie within ulp/2."""
    bf16 = by_name(spectrum(pairs["base16"], pairs["tuned16"], device="cpu"))[UP]
    assert bf16.sparsity is not None
    assert (bf16.sparsity.unchanged, bf16.sparsity.within_atol, bf16.sparsity.within_rounding) == (
        0.75,
        0.75,
        0.75,
    )
    assert bf16.erased_fraction == 0.75
    fp32 = by_name(spectrum(pairs["base16"], pairs["tuned32"], device="cpu"))[UP]
    assert fp32.sparsity is not None
    assert (fp32.sparsity.unchanged, fp32.sparsity.within_atol, fp32.sparsity.within_rounding) == (
        0.5,
        0.5,
        0.75,
    )


def test_the_profile_can_be_left_out_and_survives_the_file(pairs: dict[str, Path], tmp_path: Path) -> None:
    off = spectrum(pairs["base"], pairs["tuned"], device="cpu", sparsity_atol=None)
    assert off.sparsity_atol is None and all(m.sparsity is None for m in off.matrices)
    result = spectrum(pairs["base"], pairs["tuned"], device="cpu")
    back = SpectrumResult.from_json(result.to_json(tmp_path / "s.json"))
    assert back == result
    assert back.to_csv().splitlines()[0].endswith(",unchanged,within_atol,within_rounding,rank_fraction")


def test_lora_profile_is_of_the_formed_delta(tmp_path: Path) -> None:
    """s·B·A of rank 4 changes every entry; its base is not read, so the rounding share is unknown."""
    build_tiny_llama().save_pretrained(tmp_path / "base")
    adapter = save_lora(tmp_path / "lora", rank=4, alpha=8.0)
    q = by_name(spectrum(tmp_path / "base", adapter, device="cpu"))[Q]
    assert q.kind == "lora" and q.erased_fraction is None
    saved = load_file(str(adapter / "adapter_model.safetensors"))
    prefix = f"base_model.model.{Q.removesuffix('.weight')}"
    formed = (8.0 / 4) * saved[f"{prefix}.lora_B.weight"] @ saved[f"{prefix}.lora_A.weight"]  # (32, 32)
    kept = float((formed.abs() <= 1e-5).double().mean())
    assert q.sparsity == SparsityProfile(0.0, kept, None, 4 / TINY_HIDDEN)
    assert kept < 0.01  # exact zeros and near-zeros are rare in a formed product
