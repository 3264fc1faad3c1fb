"""Means, t intervals and Welch comparisons on numbers a reader can check by hand."""

from __future__ import annotations

import math

import pytest

from deltarank.study.claims.statistics import compare, flatten_metrics, group_runs, mean_interval

T_975_DF2 = 4.302652729911275  # Student's t, 97.5th percentile, 2 degrees of freedom (tables: 4.303)


def test_interval_of_one_two_three() -> None:
    # mean 2, sample std 1, standard error 1/√3: 2 ± 4.303 / √3 = 2 ± 2.484
    found = mean_interval([1.0, 2.0, 3.0])
    assert found["n"] == 3 and found["mean"] == 2.0 and found["std"] == 1.0
    assert found["ci95_half_width"] == pytest.approx(T_975_DF2 / math.sqrt(3))
    assert found["ci95_low"] == pytest.approx(2 - 2.48414, abs=1e-5)
    assert found["ci95_high"] == pytest.approx(2 + 2.48414, abs=1e-5)


def test_one_value_has_no_interval() -> None:
    assert mean_interval([5.0]) == {"n": 1, "mean": 5.0, "std": None, "ci95_low": None, "ci95_high": None}


def row(name: str, method: str, seed: int, loss: float, ranks: float | None = None) -> dict[str, object]:
    return {
        "name": name,
        "coordinates": {"method": method, "seed": seed},
        "from": None,
        "learning": {"held_out_loss": loss, "held_out": "builtin:code:test"},
        "forgetting": {"general_loss_rise": 0.1},
        "cost": {"peak_memory_kind": "rss", "devices": 1},
        "ranks": {} if ranks is None else {"q_proj": {"energy_90_median": ranks, "noise_floor_median": None}},
        "diversity": {"executed": False},
    }


def test_group_runs_pools_seeds_only() -> None:
    rows = [
        row("full-s0", "full", 0, 1.0, 30.0),
        row("lora-s0", "lora", 0, 2.0, 2.0),
        row("full-s1", "full", 1, 2.0, 40.0),
        row("full-s2", "full", 2, 3.0, 50.0),
    ]
    groups = group_runs(rows)
    assert [g["coordinates"] for g in groups] == [{"method": "full"}, {"method": "lora"}]
    full, lora = groups
    assert full["runs"] == ["full-s0", "full-s1", "full-s2"] and full["seeds"] == [0, 1, 2] and full["n"] == 3
    loss = full["metrics"]["learning.held_out_loss"]
    assert loss["mean"] == 2.0 and loss["ci95_half_width"] == pytest.approx(T_975_DF2 / math.sqrt(3))
    assert full["metrics"]["ranks.q_proj.energy_90_median"]["mean"] == 40.0
    assert "ranks.q_proj.noise_floor_median" not in full["metrics"]  # null everywhere: no metric
    assert "diversity.executed" not in full["metrics"] and "cost.peak_memory_kind" not in full["metrics"]
    assert lora["n"] == 1 and lora["metrics"]["learning.held_out_loss"]["ci95_low"] is None


def test_flatten_names_sections() -> None:
    flat = flatten_metrics(row("a", "lora", 0, 1.5, 2.0))
    assert flat == {
        "learning.held_out_loss": 1.5,
        "forgetting.general_loss_rise": 0.1,
        "cost.devices": 1.0,
        "ranks.q_proj.energy_90_median": 2.0,
    }


def test_compare_welch() -> None:
    # a = [1, 2, 3], b = [4, 5, 6]: difference −3, variances 1 and 1, se = √(1/3 + 1/3) = 0.8165,
    # Welch dof = (2/3)² / ((1/3)²/2 · 2) = 4, t(0.975, 4) = 2.776: −3 ± 2.267, does not contain 0.
    found = compare([1.0, 2.0, 3.0], [4.0, 5.0, 6.0])
    assert found["difference"] == -3.0
    assert found["ci95_low"] == pytest.approx(-3 - 2.776445 * math.sqrt(2 / 3), abs=1e-5)
    assert found["ci95_high"] == pytest.approx(-3 + 2.776445 * math.sqrt(2 / 3), abs=1e-5)
    assert found["within_noise"] is False
    # a = [1, 3], b = [2, 2.5]: difference −0.25 with a wide interval: within noise
    assert compare([1.0, 3.0], [2.0, 2.5])["within_noise"] is True
    # one seed on a side: unknown
    single = compare([1.0], [2.0, 3.0])
    assert single["within_noise"] is None and single["ci95_low"] is None and single["difference"] == -1.5
