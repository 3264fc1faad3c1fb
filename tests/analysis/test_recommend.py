"""`recommend`: per-module LoRA ranks from planted deltas of known rank; the budget greedy against brute force over
every allocation; the noise floor of a null spectrum; the peft LoraConfig it makes gives exactly those ranks."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest

from deltarank.analysis.engine import spectrum
from deltarank.analysis.maths.rank_allocation import budget_ranks, energy_ranks, lora_cost, retained_curve
from deltarank.analysis.results.recommendation import RecommendationResult, default_rank
from deltarank.analysis.tools.recommend import recommend
from deltarank.errors import InputError, OptionError
from tests.conftest import build_tiny_llama
from tests.planting import plant_into

# Planted exact-rank deltas of the tiny Llama (q_proj 32 × 32, k_proj 16 × 32, up_proj 64 × 32, down_proj 32 × 64):
# name -> planted σ. Every other matrix is left unchanged (rank 0).
PLANTED: dict[str, list[float]] = {
    "model.layers.0.self_attn.q_proj": [4.0, 3.0, 2.0],
    "model.layers.1.self_attn.q_proj": [2.0, 2.0, 1.5, 1.0, 0.5],
    "model.layers.0.self_attn.k_proj": [1.0, 1.0],
    "model.layers.1.mlp.up_proj": [3.0, 2.0, 2.0, 1.0, 1.0, 1.0, 0.5],
    "model.layers.0.mlp.down_proj": [1.0],
}


@pytest.fixture
def tuned_dir(tiny_model_dir: Path, tmp_path: Path) -> Path:
    return plant_into(tiny_model_dir, tmp_path / "tuned", PLANTED)


def test_energy_policy_returns_the_planted_ranks(tiny_model_dir: Path, tuned_dir: Path) -> None:
    result = recommend(tiny_model_dir, tuned_dir, energy=0.999, device="cpu")
    assert result.ranks() == {module: len(sigma) for module, sigma in PLANTED.items()}
    assert (
        len(result.matrices) == 14 and sum(m.rank == 0 for m in result.matrices) == 9
    )  # unchanged: left out
    q0 = next(m for m in result.matrices if m.name == "model.layers.0.self_attn.q_proj")
    assert q0.shape == (32, 32) and q0.parameters == 3 * 64 and q0.cap == 3  # the noise floor ends at 3
    assert q0.retained_energy == pytest.approx(1.0, abs=1e-9) and q0.residual == pytest.approx(0.0, abs=1e-4)
    # kept shares at k = 1, 2, 3 of σ = 4, 3, 2: 16/29, 25/29, 29/29; the curve runs to min(32, 256) ranks
    assert q0.curve[:3] == pytest.approx((16 / 29, 25 / 29, 1.0), abs=1e-6) and len(q0.curve) == 32
    # 5 modules at ranks 3, 5, 2, 7, 1: no rank repeats, so r is the smallest; α = 2r everywhere
    assert (result.lora_r, result.lora_alpha) == (1, 2)
    costs = 3 * 64 + 5 * 64 + 2 * 48 + 7 * 96 + 1 * 96
    assert result.trainable_parameters == costs == 1376
    assert result.retained_energy == pytest.approx(1.0, abs=1e-9)
    assert (result.energy_bound, result.optimal, result.budget_left) == (None, None, None)


def test_energy_below_one_drops_the_small_directions(tiny_model_dir: Path, tuned_dir: Path) -> None:
    result = recommend(tiny_model_dir, tuned_dir, energy=0.8, device="cpu")
    # q0: 25/29 = 0.862 ≥ 0.8 at k = 2; q1: σ² = 4, 4, 2.25, 1, 0.25 → 10.25/11.5 = 0.891 at k = 3
    assert result.ranks()["model.layers.0.self_attn.q_proj"] == 2
    assert result.ranks()["model.layers.1.self_attn.q_proj"] == 3
    q0 = next(m for m in result.matrices if m.name == "model.layers.0.self_attn.q_proj")
    assert q0.retained_energy == pytest.approx(25 / 29, abs=1e-6)
    assert q0.residual == pytest.approx(math.sqrt(4 / 29), abs=1e-6)  # ‖ΔW − ΔW_2‖/‖ΔW‖ = 2/√29


def test_budget_spent_on_the_planted_directions_is_optimal(tiny_model_dir: Path, tuned_dir: Path) -> None:
    budget = 1376  # exactly the cost of every planted direction
    result = recommend(tiny_model_dir, tuned_dir, budget=budget, device="cpu")
    assert result.ranks() == {module: len(sigma) for module, sigma in PLANTED.items()}
    assert (result.trainable_parameters, result.budget_left, result.optimal) == (1376, 0, True)
    assert result.energy_bound == pytest.approx(result.retained_energy) == pytest.approx(1.0, abs=1e-9)
    # 100 parameters less: the cheapest way to lose the least energy is giving up q1's σ = 0.5 (cost 64,
    # σ²/c = 0.0039) and up's σ = 0.5 (cost 96, 0.0026) … the greedy stops where no open matrix's next rank fits
    smaller = recommend(tiny_model_dir, tuned_dir, budget=budget - 100, device="cpu")
    assert smaller.trainable_parameters <= budget - 100
    assert smaller.retained_energy < 1.0 and smaller.energy_bound is not None
    assert smaller.retained_energy <= smaller.energy_bound <= 1.0


def test_a_null_spectrum_raises_the_noise_floor(
    tiny_model_dir: Path, tuned_dir: Path, tmp_path: Path
) -> None:
    # a null ΔW whose q0 σ₁ = 2.5 lies between the planted 3 and 2: q0 keeps 2 ranks even at τ = 0.999
    null_dir = plant_into(
        tiny_model_dir, tmp_path / "null", {"model.layers.0.self_attn.q_proj": [2.5]}, seed=7
    )
    null_file = tmp_path / "null.json"
    spectrum(tiny_model_dir, null_dir, device="cpu").to_json(null_file)
    result = recommend(tiny_model_dir, tuned_dir, energy=0.999, null=null_file, device="cpu")
    q0 = next(m for m in result.matrices if m.name == "model.layers.0.self_attn.q_proj")
    assert (q0.rank, q0.cap) == (2, 2) and q0.noise_floor == pytest.approx(2.5, rel=1e-5)
    assert result.ranks()["model.layers.1.self_attn.q_proj"] == 5  # its null σ₁ is 0: only its own floor
    assert result.null == str(null_file)


def test_bad_policies_and_null_files_are_refused(
    tiny_model_dir: Path, tuned_dir: Path, tmp_path: Path
) -> None:
    with pytest.raises(OptionError, match="exactly one of --energy"):
        recommend(tiny_model_dir, tuned_dir, energy=0.9, budget=100)
    with pytest.raises(OptionError, match="exactly one of --energy"):
        recommend(tiny_model_dir, tuned_dir)
    with pytest.raises(OptionError, match=r"--energy must lie in \(0, 1\]"):
        recommend(tiny_model_dir, tuned_dir, energy=1.5)
    # the cheapest rank among the changed matrices: k_proj (16, 32) or down_proj's (32, 64)? k_proj: 48
    with pytest.raises(
        OptionError,
        match=r"--budget 47 buys no rank: .*layers\.0\.self_attn\.k_proj \(16, 32\), costs 48 parameters",
    ):
        recommend(tiny_model_dir, tuned_dir, budget=47, device="cpu")
    partial = tmp_path / "partial.json"
    spectrum(tiny_model_dir, tuned_dir, device="cpu", include=r".*layers\.0\..*").to_json(partial)
    with pytest.raises(InputError, match=r"no record of model\.layers\.1\."):
        recommend(tiny_model_dir, tuned_dir, energy=0.9, null=partial, device="cpu")


def test_result_round_trips_through_json(tiny_model_dir: Path, tuned_dir: Path, tmp_path: Path) -> None:
    result = recommend(tiny_model_dir, tuned_dir, budget=700, device="cpu")
    path = tmp_path / "recommendation.json"
    result.to_json(path)
    assert RecommendationResult.from_json(path) == result
    data = json.loads(path.read_text())
    assert data["schema"] == "deltarank.recommendation/1" and data["policy"] == "budget"


# ---- the budget greedy against brute force ------------------------------------------------------------------


def brute_force(energies: list[np.ndarray], costs: list[int], caps: list[int], budget: int) -> float:
    """The most energy any allocation within `budget` keeps, by trying every one."""
    best = 0.0
    for ranks in itertools.product(*(range(cap + 1) for cap in caps)):
        if sum(r * c for r, c in zip(ranks, costs, strict=True)) <= budget:
            best = max(best, sum(float(e[:r].sum()) for e, r in zip(energies, ranks, strict=True)))
    return best


@pytest.mark.parametrize("seed", range(4))
def test_greedy_budget_matches_brute_force_when_spent_along_its_order(seed: int) -> None:
    shapes = [(2, 3), (3, 4), (4, 6)]  # costs 5, 7, 10 per rank; caps 2, 3, 4 → 60 allocations
    rng = np.random.default_rng(seed)
    spectra = [np.sort(rng.uniform(0.1, 2.0, min(s)))[::-1] for s in shapes]
    energies = [s**2 for s in spectra]
    costs = [lora_cost(s, 1) for s in shapes]
    caps = [min(s) for s in shapes]
    # the budgets spent exactly along the order of σ²/cost: the cumulative costs of the sorted increments
    increments = sorted(
        ((float(e[k]) / c, c) for e, c, cap in zip(energies, costs, caps, strict=True) for k in range(cap)),
        reverse=True,
    )
    along_order = set(itertools.accumulate(c for _, c in increments))
    for budget in range(0, sum(c * k for c, k in zip(costs, caps, strict=True)) + 2):
        allocation = budget_ranks(spectra, shapes, budget, caps)
        best = brute_force(energies, costs, caps, budget)
        assert allocation.spent == sum(r * c for r, c in zip(allocation.ranks, costs, strict=True)) <= budget
        assert all(0 <= r <= cap for r, cap in zip(allocation.ranks, caps, strict=True))
        kept = sum(float(e[:r].sum()) for e, r in zip(energies, allocation.ranks, strict=True))
        assert allocation.kept == pytest.approx(kept)
        assert allocation.kept <= best + 1e-12 and best <= allocation.bound + 1e-12  # the bound holds
        if budget in along_order:
            assert allocation.optimal and allocation.spent == budget
        if allocation.optimal:
            assert allocation.kept == pytest.approx(best, abs=1e-12)
    assert len(along_order) == 9  # 2 + 3 + 4 increments, each ending one exactly spent budget


def test_spending_the_budget_exactly_after_passing_over_a_rank_is_not_always_optimal() -> None:
    # per parameter: B's rank (cost 8, σ² = 8) 1.0, A's (cost 10, σ² = 9.9) 0.99, C's (cost 2, σ² = 0.2) 0.1.
    # Budget 10: the greedy takes B (2 left), cannot fit A, fills the 2 with C: spent exactly, keeps 8.2;
    # A alone keeps 9.9. So only an allocation along the order is guaranteed optimal, and the bound says so.
    shapes = [(5, 5), (4, 4), (1, 1)]  # A, B, C
    spectra = [np.sqrt([9.9]), np.sqrt([8.0]), np.sqrt([0.2])]
    allocation = budget_ranks(spectra, shapes, 10, [1, 1, 1])
    assert allocation.ranks == (0, 1, 1) and allocation.spent == 10
    assert allocation.kept == pytest.approx(8.2) and not allocation.optimal
    assert allocation.bound == pytest.approx(8.0 + 2 / 10 * 9.9) and allocation.bound >= 9.9  # 9.98
    assert brute_force([s**2 for s in spectra], [10, 8, 2], [1, 1, 1], 10) == pytest.approx(9.9)


def test_greedy_leftover_goes_to_cheaper_matrices_and_caps_hold() -> None:
    shapes = [(8, 8), (1, 1)]  # costs 16 and 2
    spectra = [np.array([3.0, 2.0, 1.0]), np.array([0.1])]
    allocation = budget_ranks(spectra, shapes, 37, [2, 1])  # the cap of 2 stops the first at σ = 2
    assert allocation.ranks == (2, 1) and allocation.spent == 34 and allocation.optimal  # nothing left to buy
    assert energy_ranks([np.array([3.0, 2.0, 1.0])], 0.9, [1]) == (1,)  # r_0.9 = 2, capped at 1
    assert retained_curve([3.0, 4.0], 2) == pytest.approx((9 / 25, 1.0))
    assert default_rank([0, 4, 8, 8, 4, 2]) == 4 and default_rank([0, 0]) == 1


# ---- peft builds exactly the recommended ranks ----------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:The PEFT config's `base_model_name_or_path` was renamed")
def test_peft_builds_the_recommended_rank_per_module(tmp_path: Path) -> None:
    """A 12-layer model: layer 1's q_proj in rank_pattern must not also select layer 11's."""
    from peft import LoraConfig, get_peft_model

    from deltarank.train.lora_patterns import write_recommendation

    base = tmp_path / "base12"
    build_tiny_llama(num_hidden_layers=12).save_pretrained(base, safe_serialization=True)
    planted = {f"model.layers.{i}.self_attn.q_proj": [1.0] * 4 for i in (0, 10, 11)}
    planted["model.layers.1.self_attn.q_proj"] = [1.0] * 2
    planted["model.layers.11.mlp.down_proj"] = [1.0] * 6
    tuned = plant_into(base, tmp_path / "tuned12", planted)
    result = recommend(base, tuned, energy=0.999, device="cpu")
    write_recommendation(result, tmp_path / "rec", overwrite=False)
    config = LoraConfig.from_pretrained(str(tmp_path / "rec"))
    assert config.r == 4 and config.lora_alpha == 8
    assert config.rank_pattern == {"model.layers.1.self_attn.q_proj": 2, "model.layers.11.mlp.down_proj": 6}
    assert config.alpha_pattern == {"model.layers.1.self_attn.q_proj": 4, "model.layers.11.mlp.down_proj": 12}
    model = get_peft_model(build_tiny_llama(num_hidden_layers=12), config)
    built = {
        name.removeprefix("base_model.model.").removesuffix(".lora_A.default.weight"): int(p.shape[0])
        for name, p in model.named_parameters()
        if name.endswith("lora_A.default.weight")
    }
    assert built == {name: len(sigma) for name, sigma in planted.items()}
    scaling = {
        name.removeprefix("base_model.model."): module.scaling["default"]
        for name, module in model.named_modules()
        if isinstance(getattr(module, "scaling", None), dict) and "default" in module.scaling
    }
    assert len(scaling) == 5 and set(scaling.values()) == {2.0}  # α = 2r: scale α/r = 2 in every module
