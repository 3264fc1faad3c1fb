"""The paired bootstrap of a loss difference between two models measured on the same sequences."""

from __future__ import annotations

import numpy as np
import pytest

from deltarank.evaluation.paired import paired_difference


def test_the_estimate_is_the_token_weighted_difference_and_the_interval_covers_it() -> None:
    counts = [10, 20, 30, 40]
    a = {"sums": [12.0, 22.0, 36.0, 40.0], "counts": counts}
    b = {"sums": [10.0, 20.0, 30.0, 40.0], "counts": counts}
    found = paired_difference(a, b)
    assert found is not None
    assert found["estimate"] == pytest.approx((2 + 2 + 6 + 0) / 100)
    assert found["ci95_low"] <= found["estimate"] <= found["ci95_high"]
    assert found["sequences"] == 4
    # resampling draws whole sequences: the interval stays inside the smallest and largest per-token difference
    per_token = [0.2, 0.1, 0.2, 0.0]
    assert min(per_token) <= found["ci95_low"] and found["ci95_high"] <= max(per_token)
    assert paired_difference(a, b) == found  # a fixed seed: the same interval every time


def test_identical_models_give_a_zero_width_interval_and_other_sequences_none() -> None:
    a = {"sums": [1.0, 2.0, 3.0], "counts": [1, 2, 3]}
    assert paired_difference(a, a) == {
        "estimate": 0.0,
        "ci95_low": 0.0,
        "ci95_high": 0.0,
        "sequences": 3,
        "method": paired_difference(a, a)["method"],  # type: ignore[index]
    }
    assert paired_difference(a, {"sums": [1.0, 2.0], "counts": [1, 2]}) is None
    assert paired_difference({"sums": [], "counts": []}, {"sums": [], "counts": []}) is None


def test_the_interval_narrows_with_more_sequences() -> None:
    rng = np.random.default_rng(1)
    widths = []
    for n in (16, 256):
        counts = [20] * n
        noise = rng.normal(0.1, 1.0, size=n) * 20  # per-sequence sum differences around 0.1 per token
        a = {"sums": list(100.0 + noise), "counts": counts}
        b = {"sums": [100.0] * n, "counts": counts}
        found = paired_difference(a, b)
        assert found is not None
        widths.append(found["ci95_high"] - found["ci95_low"])
    assert widths[1] < widths[0] / 2  # ∝ 1/√n: 4× narrower expected
