"""The claims of the BELLE study (Sun et al. 2023, arXiv 2304.08109), each checked against a study's rows.

About +2 points of score per doubling of the training data, full fine-tuning costs 3–5× LoRA's training time,
and LoRA benefits from a bigger base model.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Sequence
from typing import Any

from deltarank.analysis.results.claim_statistic import (
    INCONCLUSIVE,
    Z80,
    Z95,
    binomial_variance,
    describe_statistic,
    interval_label,
    statistic,
)
from deltarank.figures.study_rows import (
    Run,
    accuracy,
    is_full,
    is_lora,
    method,
    regularised,
    section,
    setting,
)
from deltarank.study.claims.statistics import seed_half_width
from deltarank.study.claims.verdicts import (
    BELLE,
    CONTEXT,
    claim_result,
    context,
    mean,
    runs_by_context,
)

COST_RANGE = (3.0, 5.0)
POINTS_PER_DOUBLING = (1.0, 3.0)  # "about +2 points"


def points_per_doubling(runs: Sequence[Run]) -> dict[str, Any] | None:
    """About +2 accuracy points per doubling of the data: the least-squares slope of accuracy (%) against
    log2(data size) per model and method (the seeds' mean at each size), and the declared statistic, the mean
    of those slopes, with its interval: a slope is a linear combination Σ cᵢ · accuracyᵢ, so the binomial
    variance of each accuracy (evaluation noise) and Welch's t over the seeds at each size (seed noise) carry
    over exactly. The claim: 1–3 points per doubling ("about +2")."""
    series: dict[tuple[str, str], dict[float, list[Run]]] = {}
    for run in runs:
        size, acc = setting(run, "data_size"), accuracy(run)
        if size is None or acc is None or run.get("from") or regularised(run):
            continue
        key = (str(setting(run, "model")), str(method(run)))
        series.setdefault(key, {}).setdefault(float(size), []).append(run)
    fitted = {key: points for key, points in series.items() if len(points) >= 2}
    if not fitted:
        return None
    terms: list[tuple[float, list[Run]]] = []
    slopes = {}
    for key, points in fitted.items():
        xs = [math.log2(size) for size in points]
        weights = _slope_weights(xs)
        slopes[key] = sum(
            w * mean([_points(r) for r in group]) for w, group in zip(weights, points.values(), strict=True)
        )
        terms += [(w / len(fitted), group) for w, group in zip(weights, points.values(), strict=True)]
    found = _accuracy_combination(
        "accuracy points per doubling of the data (mean over series)", "points", terms, POINTS_PER_DOUBLING
    )
    claim = "about +2 points of score per doubling of the training data"
    evidence = "; ".join(f"{m} {meth}: {s:+.2f} points per doubling" for (m, meth), s in slopes.items())
    evidence += f"; {describe_statistic(found, '+.2f')}"
    return claim_result(
        "points_per_doubling",
        BELLE,
        claim,
        found["verdict"],
        evidence,
        slopes={f"{m} {meth}": s for (m, meth), s in slopes.items()},
        statistic=found,
    )


def _slope_weights(xs: Sequence[float]) -> list[float]:
    """cᵢ with slope = Σ cᵢ yᵢ for the least-squares fit of y on x (all 0 when the xs do not vary)."""
    mx = mean(xs)
    den = sum((x - mx) ** 2 for x in xs)
    return [(x - mx) / den if den else 0.0 for x in xs]


def _points(run: Run) -> float:
    return float(accuracy(run) or 0.0) * 100


def _accuracy_combination(
    name: str,
    units: str,
    terms: Sequence[tuple[float, Sequence[Run]]],
    claim_range: tuple[float, float | None],
) -> dict[str, Any]:
    """Σ wᵢ · (mean accuracy in points of the runs of term i) with binomial evaluation noise (each run's
    accuracy_examples; unpaired) and Welch's t over the seeds of each term."""
    estimate = sum(w * mean([_points(r) for r in group]) for w, group in terms)
    variance = 0.0
    for w, group in terms:
        for run in group:
            n = (run.get("learning") or {}).get("accuracy_examples")
            if not n:
                variance = math.nan
                break
            p = float(accuracy(run) or 0.0)
            variance += (w / len(group)) ** 2 * binomial_variance(p, int(n)) * 1e4
    evaluation = None if math.isnan(variance) else Z95 * math.sqrt(variance)
    seed = seed_half_width([(w, [_points(r) for r in group]) for w, group in terms])
    seeds = min(len(group) for _, group in terms)
    return statistic(name, units, estimate, claim_range, evaluation, seed, seeds)


def full_cost_multiple(runs: Sequence[Run]) -> dict[str, Any] | None:
    """Full FT costs 3–5× LoRA's time: device-seconds per training token, full over LoRA, matched context; the
    declared statistic is the geometric mean ratio over the matched pairs with its t interval over the pairs (on
    the log ratio; one pair: no interval)."""

    def per_token(run: Run) -> float | None:
        cost = section(run, "cost")
        seconds, tokens = cost.get("device_seconds"), cost.get("tokens")
        return float(seconds) / float(tokens) if seconds and tokens else None

    ratios = []
    full_by = runs_by_context([r for r in runs if is_full(r)])
    for run in runs:
        if not is_lora(run) or (lora_cost := per_token(run)) is None:
            continue
        matched = [c for r in full_by.get(context(run), []) if (c := per_token(r)) is not None]
        if matched:
            ratios.append(mean(matched) / lora_cost)
    if not ratios:
        return None
    claim = "full fine-tuning costs 3–5× LoRA's training time"
    logs = [math.log(r) for r in ratios]
    half = seed_half_width([(1.0, logs)])
    centre = mean(logs)
    found = statistic(
        "device-seconds per token, full ÷ LoRA (geometric mean over pairs)", "×", math.exp(centre), COST_RANGE,
        None, None, len(ratios),
    )  # fmt: skip
    if half is not None:  # the interval of the geometric mean, back from the log scale
        low, high = math.exp(centre - half), math.exp(centre + half)
        found.update(ci95_low=low, ci95_high=high, seed_half_width=half, training_noise_included=True,
                     minimum_detectable_effect=(Z95 + Z80) / Z95 * (high - low) / 2,
                     verdict=interval_label(low, high, COST_RANGE))  # fmt: skip
    evidence = (
        f"device-seconds per training token, full over LoRA: median {statistics.median(ratios):.2f}× over "
        f"{len(ratios)} matched pairs (range {min(ratios):.2f}–{max(ratios):.2f}×); "
        f"{describe_statistic(found, '.2f')}"
    )
    return claim_result(
        "full_cost_multiple", BELLE, claim, found["verdict"], evidence, ratio=math.exp(centre), pairs=len(ratios),
        statistic=found,
    )  # fmt: skip


def lora_bigger_base(runs: Sequence[Run]) -> dict[str, Any] | None:
    """LoRA benefits from a bigger base: LoRA's accuracy on the larger base (base parameters = total −
    trainable) minus on the smaller one, matched data, size and duration; the declared statistic is the mean of
    those differences over matched pairs (points), with binomial and seed noise; the claim: > 0."""
    lora = [r for r in runs if is_lora(r) and not r.get("from")]
    sizes: dict[str, float] = {}
    for run in lora:
        cost = section(run, "cost")
        if cost.get("total_parameters") is not None:
            sizes[str(setting(run, "model"))] = float(cost["total_parameters"]) - float(
                cost.get("trainable_parameters") or 0
            )
    if len(sizes) < 2:
        return None
    claim = "LoRA benefits from a bigger base model"
    if not all(accuracy(r) is not None for r in lora):
        return claim_result(
            "lora_bigger_base",
            BELLE,
            claim,
            INCONCLUSIVE,
            "no accuracy: held-out losses of models with different tokenizers are not comparable",
        )
    keys = [k for k in CONTEXT if k != "model"]
    pairs: list[tuple[list[Run], list[Run]]] = []
    for group in runs_by_context(lora, keys).values():
        by_model: dict[str, list[Run]] = {}
        for run in group:
            by_model.setdefault(str(setting(run, "model")), []).append(run)
        ordered = sorted((sizes[m], m) for m in by_model if m in sizes)
        pairs += [(by_model[small], by_model[big]) for (_, small), (_, big) in itertools.pairwise(ordered)]
    if not pairs:
        return None
    terms = [t for small, big in pairs for t in ((1 / len(pairs), big), (-1 / len(pairs), small))]
    found = _accuracy_combination("LoRA accuracy, bigger − smaller base", "points", terms, (0.0, None))
    wins = sum(mean([_points(r) for r in big]) > mean([_points(r) for r in small]) for small, big in pairs)
    evidence = (
        f"LoRA's accuracy was higher on the bigger base in {wins}/{len(pairs)} matched comparisons; "
        f"{describe_statistic(found, '+.1f')}"
    )
    return claim_result(
        "lora_bigger_base",
        BELLE,
        claim,
        found["verdict"],
        evidence,
        wins=wins,
        pairs=len(pairs),
        statistic=found,
    )
