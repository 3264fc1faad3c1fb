"""Repeated seeds: the mean and 95% confidence interval of every metric, and whether two settings differ.

- `group_runs`: runs whose coordinates differ only in `seed` form a group; for every numeric metric the group
  has its mean, the sample standard deviation and the 95% confidence interval of the mean from Student's t
  distribution (mean ± t(0.975, n−1) · s / √n). One run (n = 1): no interval (null).
- `compare`: the difference of two groups' means with Welch's 95% interval (unequal variances,
  Welch–Satterthwaite degrees of freedom). The difference is within noise when the interval contains 0;
  with fewer than two runs on either side nothing can be said (`within_noise` null).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from deltarank.analysis.results.claim_statistic import t_half_width

SECTIONS = ("learning", "forgetting", "diversity", "cost", "ranks")
CONFIDENCE = 0.95
SEED = "seed"


def flatten_metrics(row: Mapping[str, Any]) -> dict[str, float]:
    """The numeric metrics of one run as `section.key` (ranks: `ranks.<module>.<column>`); booleans and text
    left out."""
    found: dict[str, float] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for key, inner in value.items():
                walk(f"{prefix}.{key}", inner)
        elif isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            found[prefix] = float(value)

    for section in SECTIONS:
        walk(section, row.get(section) or {})
    return found


def mean_interval(values: Sequence[float]) -> dict[str, Any]:
    """n, mean, std (sample), and the 95% t interval of the mean (null bounds when n < 2)."""
    n = len(values)
    mean = sum(values) / n if n else None
    result: dict[str, Any] = {"n": n, "mean": mean, "std": None, "ci95_low": None, "ci95_high": None}
    if n < 2 or mean is None:
        return result
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_half_width(values)
    assert half is not None  # n ≥ 2
    result.update(std=std, ci95_low=mean - half, ci95_high=mean + half, ci95_half_width=half)
    return result


def group_key(row: Mapping[str, Any]) -> str:
    """The coordinates of a run without its seed, and its parent (a stacked run), as one comparable key."""
    coordinates = {k: v for k, v in (row.get("coordinates") or {}).items() if k != SEED}
    return json.dumps({"coordinates": coordinates, "from": row.get("from")}, sort_keys=True, default=str)


def group_runs(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rows that differ only in `seed` grouped: coordinates without seed, n, and for every numeric metric its
    mean and 95% confidence interval (t distribution), in the order the groups first appear.

    Returns:
        [{"coordinates", "runs" (names), "seeds", "n", "metrics": {"learning.held_out_loss": {"n", "mean",
        "std", "ci95_low", "ci95_high"[, "ci95_half_width"]}, ...}}]; a metric's n counts the runs that have it.
    """
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault(group_key(row), []).append(row)
    result = []
    for members in groups.values():
        flat = [flatten_metrics(m) for m in members]
        keys = list(dict.fromkeys(k for f in flat for k in f))
        result.append(
            {
                "coordinates": {k: v for k, v in (members[0].get("coordinates") or {}).items() if k != SEED},
                "runs": [m.get("name") for m in members],
                "seeds": [(m.get("coordinates") or {}).get(SEED) for m in members],
                "n": len(members),
                "metrics": {k: mean_interval([f[k] for f in flat if k in f]) for k in keys},
            }
        )
    return result


def compare(a: Sequence[float], b: Sequence[float]) -> dict[str, Any]:
    """Difference of means (a − b), its 95% Welch interval and whether it is within noise.

    Returns:
        {"difference", "ci95_low", "ci95_high", "n_a", "n_b", "within_noise"}: within_noise is True when the
        interval contains 0, False when it does not, None (unknown) with fewer than two values on a side;
        the bounds are then null too.
    """
    n_a, n_b = len(a), len(b)
    result: dict[str, Any] = {
        "difference": (sum(a) / n_a - sum(b) / n_b) if n_a and n_b else None,
        "ci95_low": None,
        "ci95_high": None,
        "n_a": n_a,
        "n_b": n_b,
        "within_noise": None,
    }
    half = seed_half_width([(1.0, a), (-1.0, b)])
    if half is None:
        return result
    diff = float(result["difference"])
    low, high = diff - half, diff + half
    result.update(ci95_low=low, ci95_high=high, within_noise=low <= 0 <= high)
    return result


def seed_half_width(terms: Sequence[tuple[float, Sequence[float]]]) -> float | None:
    """The 95% half-width of Σ wᵢ · mean(valuesᵢ) from the spread of each term's values over seeds: Welch's
    t interval generalised to a linear combination (variance Σ wᵢ² sᵢ² / nᵢ, Welch–Satterthwaite degrees of
    freedom). None when a term with a non-zero weight has fewer than two values."""
    weighted = [(w, v) for w, v in terms if w]
    if not weighted or any(len(v) < 2 for _, v in weighted):
        return None
    parts = [(w * w * _variance(v) / len(v), len(v)) for w, v in weighted]
    total = sum(p for p, _ in parts)
    if total == 0:
        return 0.0
    from scipy import stats

    dof = total**2 / sum(p * p / (n - 1) for p, n in parts if p)
    return float(stats.t.ppf(0.5 + CONFIDENCE / 2, dof)) * math.sqrt(total)


def _variance(values: Sequence[float]) -> float:
    mean = sum(values) / len(values)
    return sum((v - mean) ** 2 for v in values) / (len(values) - 1)
