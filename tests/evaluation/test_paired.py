"""The paired bootstrap of a loss difference between two models measured on the same sequences."""

from __future__ import annotations

import numpy as np
import pytest

from deltarank.evaluation.paired import paired_difference, paired_share


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


def test_a_share_of_a_change_is_the_ratio_of_summed_changes_with_its_interval() -> None:
    counts = [10, 20, 30]
    reference = {"sums": [30.0, 60.0, 90.0], "counts": counts}
    whole = {"sums": [20.0, 40.0, 60.0], "counts": counts}  # every sequence's loss down by 1/3
    part = {"sums": [21.0, 44.0, 60.0], "counts": counts}  # keeps 90%, 80% and 100% of each drop
    found = paired_share(part, whole, reference)
    assert found is not None
    assert found["estimate"] == pytest.approx((9 + 16 + 30) / (10 + 20 + 30))
    assert 0.8 <= found["ci95_low"] <= found["estimate"] <= found["ci95_high"] <= 1.0
    assert paired_share(whole, whole, reference) == {
        **found,
        "estimate": 1.0,
        "ci95_low": 1.0,
        "ci95_high": 1.0,
    }
    assert paired_share(part, reference, reference) is None  # nothing changed: no share
    assert paired_share(part, whole, {"sums": [1.0], "counts": [1]}) is None  # other sequences
