"""The statistic behind every verdict: one declared number with units, its 95% interval, and three labels.

Every checked claim (a study's reference claims, the rank claim of `reproduce`) declares one statistic with its
units (a paired difference of held-out loss in nats/token, a rank multiple, a slope in points per doubling) and
the range the claim predicts for it (`claim_range`: (low, high), None for an open end). Its interval combines

- evaluation noise: the paired bootstrap over the evaluation sequences (`deltarank.evaluation.paired`), or the
  binomial variance of an accuracy; available with one seed;
- seed noise: Welch's t interval over the seeds (`deltarank.study.claims.statistics.seed_half_width`);

their 95% half-widths added in quadrature (the two are independent: the evaluation sequences are fixed across
seeds). With one seed the interval holds evaluation noise only and says so: "training noise not included".

The verdict is `consistent` when the interval lies inside the claim's range, `inconsistent` when it lies
entirely outside, and `inconclusive` otherwise (or without any interval). The minimum detectable effect is
(z₀.₉₇₅ + z₀.₈) · SE with SE = half-width / z₀.₉₇₅: the smallest true effect the design finds with 80% power
at the 5% level.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

CONSISTENT = "consistent"
INCONSISTENT = "inconsistent"
INCONCLUSIVE = "inconclusive"
LABELS = (CONSISTENT, INCONSISTENT, INCONCLUSIVE)
Z95 = 1.959963984540054  # two-sided 95%
Z80 = 0.8416212335729143  # 80% power
NO_TRAINING_NOISE = "training noise not included"

Range = tuple["float | None", "float | None"]


def interval_label(low: float | None, high: float | None, claim_range: Range) -> str:
    """`consistent` when [low, high] lies inside the claim's range (open ends None), `inconsistent` when it lies
    entirely outside, `inconclusive` otherwise or without an interval."""
    if low is None or high is None or math.isnan(low) or math.isnan(high):
        return INCONCLUSIVE
    lo = -math.inf if claim_range[0] is None else claim_range[0]
    hi = math.inf if claim_range[1] is None else claim_range[1]
    if lo <= low and high <= hi:
        return CONSISTENT
    if high < lo or low > hi:
        return INCONSISTENT
    return INCONCLUSIVE


def combined_label(labels: Iterable[str]) -> str:
    """A claim made of parts (learns less *and* forgets less; every context of a study): `consistent` when every
    part is, `inconsistent` when any part is, else `inconclusive`."""
    found = list(labels)
    if not found:
        return INCONCLUSIVE
    if INCONSISTENT in found:
        return INCONSISTENT
    return CONSISTENT if all(label == CONSISTENT for label in found) else INCONCLUSIVE


def t_half_width(values: Sequence[float]) -> float | None:
    """The 95% Student t half-width of the mean of `values` (seeds, prompts): t₀.₉₇₅,ₙ₋₁ · s / √n; None when
    n < 2."""
    n = len(values)
    if n < 2:
        return None
    from scipy import stats

    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return float(stats.t.ppf(0.975, n - 1)) * std / math.sqrt(n)


def binomial_variance(p: float, n: int) -> float:
    """The variance p(1 − p)/n of an accuracy p over n examples (the evaluation noise of an accuracy)."""
    return p * (1 - p) / n


def statistic(
    name: str,
    units: str,
    estimate: float,
    claim_range: Range,
    evaluation_half_width: float | None,
    seed_half_width: float | None,
    seeds: int,
) -> dict[str, Any]:
    """One declared statistic with its combined interval, minimum detectable effect and verdict.

    Args:
        name: What is measured, in words (`held-out loss, LoRA − full`).
        units: Its units (`nats/token`, `× r`, `points per doubling`).
        estimate: The point estimate.
        claim_range: The range the claim predicts, (low, high), None for an open end.
        evaluation_half_width: The 95% half-width from evaluation noise (None: not measured).
        seed_half_width: The 95% half-width from seed noise (None: fewer than two seeds).
        seeds: The fewest seeds behind any term of the statistic.

    Returns:
        `{"name", "units", "estimate", "ci95_low", "ci95_high", "claim_range", "evaluation_half_width",
        "seed_half_width", "seeds", "training_noise_included", "minimum_detectable_effect", "verdict"}`; the
        bounds and the minimum detectable effect are None without any interval.
    """
    halves = [h for h in (evaluation_half_width, seed_half_width) if h is not None]
    half = math.sqrt(sum(h * h for h in halves)) if halves else None
    low = None if half is None else estimate - half
    high = None if half is None else estimate + half
    return {
        "name": name,
        "units": units,
        "estimate": estimate,
        "ci95_low": low,
        "ci95_high": high,
        "claim_range": list(claim_range),
        "evaluation_half_width": evaluation_half_width,
        "seed_half_width": seed_half_width,
        "seeds": seeds,
        "training_noise_included": seed_half_width is not None,
        "minimum_detectable_effect": None if half is None else (Z95 + Z80) * half / Z95,
        "verdict": interval_label(low, high, claim_range),
    }


def describe_statistic(found: dict[str, Any], spec: str = "+.4f") -> str:
    """`held-out loss, LoRA − full +0.0100 nats/token [+0.0020, +0.0180] (claim > 0; minimum detectable effect
    0.0110; training noise not included)`."""

    def show(value: float) -> str:
        return format(value, spec)

    text = f"{found['name']} {show(found['estimate'])} {found['units']}"
    if found["ci95_low"] is not None:
        text += f" [{show(found['ci95_low'])}, {show(found['ci95_high'])}]"
    notes = [f"claim {describe_range(found['claim_range'], spec)}"]
    if found["ci95_low"] is None:
        notes.append("no interval: one seed and no per-sequence or per-example record")
    elif found["minimum_detectable_effect"] is not None:
        mde = found["minimum_detectable_effect"]
        notes.append(f"minimum detectable effect {format(mde, spec.lstrip('+'))}")
    if found["ci95_low"] is not None and not found["training_noise_included"]:
        notes.append(NO_TRAINING_NOISE)
    return text + f" ({'; '.join(notes)})"


def describe_range(claim_range: Sequence[float | None], spec: str = "+.4f") -> str:
    """`> 0`, `< 0`, `in [10, 100]`."""
    low, high = claim_range
    if high is None and low is not None:
        return f"> {format(low, spec.lstrip('+'))}" if low else "> 0"
    if low is None and high is not None:
        return f"< {format(high, spec.lstrip('+'))}" if high else "< 0"
    return f"in [{format(low, spec.lstrip('+'))}, {format(high, spec.lstrip('+'))}]"
