"""`recommend --budget-rank R`: the budget is a uniform rank-R LoRA's parameters on the same analysed matrices,
Σ R·(out + in); with every matrix's ΔW of exactly R equal singular values the best allocation is uniform R."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from deltarank.analysis.maths.rank_allocation import lora_cost, uniform_budget
from deltarank.analysis.results.recommendation import RecommendationResult
from deltarank.analysis.tools.recommend import check_policy, recommend
from deltarank.cli import main
from deltarank.errors import OptionError
from tests.planting import plant_into

R = 3
# the tiny Llama's 14 block matrices (2 layers × q, k, v, o, gate, up, down)
MODULES = [
    f"model.layers.{layer}.{module}"
    for layer in (0, 1)
    for module in (
        "self_attn.q_proj",
        "self_attn.k_proj",
        "self_attn.v_proj",
        "self_attn.o_proj",
        "mlp.gate_proj",
        "mlp.up_proj",
        "mlp.down_proj",
    )
]


@pytest.fixture
def equal_spectra(tiny_model_dir: Path, tmp_path: Path) -> Path:
    """Every block matrix moved by R equal directions (σ = 1): each matrix's spectrum ends at rank R."""
    return plant_into(tiny_model_dir, tmp_path / "tuned", {m: [1.0] * R for m in MODULES})


def test_budget_rank_is_uniform_loras_parameters(tiny_model_dir: Path, equal_spectra: Path) -> None:
    result = recommend(tiny_model_dir, equal_spectra, budget_rank=R, device="cpu")
    shapes = [m.shape for m in result.matrices]
    assert len(shapes) == len(MODULES)
    assert result.budget == uniform_budget(shapes, R) == sum(R * (out + inp) for out, inp in shapes)
    assert (result.policy, result.budget_rank, result.energy) == ("budget", R, None)
    # equal spectra of exactly R directions: the budget buys every one, so the allocation is uniform R
    assert result.ranks() == {m: R for m in MODULES}
    assert result.trainable_parameters == result.budget and result.budget_left == 0
    assert result.optimal is True and result.retained_energy == pytest.approx(1.0, abs=1e-9)
    assert (result.lora_r, result.lora_alpha) == (R, 2 * R)
    assert result.lora_config_kwargs()["rank_pattern"] == {}
    # the same as --budget N with N that sum, and the file keeps R
    same = recommend(tiny_model_dir, equal_spectra, budget=result.budget, device="cpu")
    assert same.ranks() == result.ranks() and same.budget_rank is None


def test_budget_rank_through_the_command_line(
    tiny_model_dir: Path, equal_spectra: Path, tmp_path: Path
) -> None:
    out = tmp_path / "rec"
    result = CliRunner().invoke(
        main,
        ["recommend", str(tiny_model_dir), str(equal_spectra), "--budget-rank", str(R), "-o", str(out),
         "--device", "cpu"],
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    saved = RecommendationResult.from_json(out / "recommendation.json")
    assert saved.budget_rank == R and saved.ranks() == {m: R for m in MODULES}
    assert f"budget {saved.budget:,}, uniform r = {R}'s" in result.stdout
    both = CliRunner().invoke(
        main,
        ["recommend", str(tiny_model_dir), str(equal_spectra), "--budget-rank", "2", "--energy", "0.9",
         "-o", str(tmp_path / "two")],
    )  # fmt: skip
    assert both.exit_code != 0 and "exactly one of --energy τ, --budget N and --budget-rank R" in both.stderr
    assert not (tmp_path / "two").exists()


def test_policy_checks() -> None:
    check_policy(None, None, 16)
    for args in ((None, None, None), (0.9, None, 16), (None, 100, 16)):
        with pytest.raises(OptionError, match="exactly one"):
            check_policy(*args)
    with pytest.raises(OptionError, match="positive LoRA rank"):
        check_policy(None, None, 0)
    assert uniform_budget([(32, 64), (16, 32)], 4) == lora_cost((32, 64), 4) + lora_cost((16, 32), 4) == 576
