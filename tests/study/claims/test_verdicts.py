"""The three verdict labels follow from a declared statistic's interval; learning rates are never pooled as seeds."""

from __future__ import annotations

import pytest

from deltarank.analysis.results.claim_statistic import interval_label, statistic
from deltarank.study.claims.learns_less_forgets_less import lora_learns_less_forgets_less
from deltarank.study.claims.statistics import compare
from tests.study.example_study import run


def test_interval_labels() -> None:
    assert interval_label(0.1, 0.3, (0.0, None)) == "consistent"
    assert interval_label(-0.3, -0.1, (0.0, None)) == "inconsistent"
    assert interval_label(-0.1, 0.3, (0.0, None)) == "inconclusive"
    assert interval_label(None, None, (0.0, None)) == "inconclusive"
    found = statistic("x", "nats/token", 0.2, (0.0, None), 0.03, 0.04, 2)
    # half-widths in quadrature: √(0.03² + 0.04²) = 0.05; MDE (1.96 + 0.84) / 1.96 × 0.05 = 0.0715
    assert (found["ci95_low"], found["ci95_high"]) == (pytest.approx(0.15), pytest.approx(0.25))
    assert found["minimum_detectable_effect"] == pytest.approx(0.0715, abs=1e-4)


def _seeds(name: str, method: str, lr: float, loss: float, rise: float, n: int = 10) -> list[dict]:
    return [
        run(
            f"{name}-s{s}",
            method,
            seed=s,
            lr=lr,
            loss=loss + 0.001 * (-1) ** s,
            rise=rise + 0.001 * (-1) ** s,
        )
        for s in range(n)
    ]


def test_pooled_learning_rates_would_give_a_false_consistent() -> None:
    """Full FT at two learning rates (loss 2.00 forgetting 0.30; loss 2.20 forgetting 0.02), LoRA at loss 2.19
    forgetting 0.05, ten seeds each. Pooling full's learning rates as seeds, LoRA forgets less (0.05 against
    0.16, interval below 0); at matched learning full forgets 0.02 + 0.28 × 0.05 = 0.034 where LoRA forgets
    0.05: LoRA forgets more, +0.016, inconsistent."""
    full = _seeds("full-a", "full", 1e-4, 2.00, 0.30) + _seeds("full-b", "full", 1e-5, 2.20, 0.02)
    lora = _seeds("lora", "lora", 1e-4, 2.19, 0.05)
    pooled = compare([r["forgetting"]["general_loss_rise"] for r in lora],
                     [r["forgetting"]["general_loss_rise"] for r in full])  # fmt: skip
    assert pooled["ci95_high"] < 0  # pooled: "LoRA forgets less" would have been consistent
    claim = lora_learns_less_forgets_less([*full, *lora])
    assert claim is not None
    (context,) = claim["numbers"]["contexts"]
    assert context["matched"] is True
    assert context["forgetting"]["estimate"] == pytest.approx(0.05 - (0.02 * 0.95 + 0.30 * 0.05), abs=1e-3)
    assert context["forgetting"]["verdict"] == "inconsistent"
    assert claim["verdict"] == "inconsistent"
