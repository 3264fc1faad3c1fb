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
from deltarank.study.claims.verdicts import (
    BELLE,
    CONTEXT,
    claim_result,
    context,
    majority_verdict,
    mean,
    runs_by_context,
)

COST_RANGE = (3.0, 5.0)
POINTS_PER_DOUBLING = (1.0, 3.0)  # "about +2 points"


def points_per_doubling(runs: Sequence[Run]) -> dict[str, Any] | None:
    """About +2 accuracy points per doubling of the data: the least-squares slope of accuracy (%) against
    log2(data size), per model and method, means over seeds at each size."""
    series: dict[tuple[str, str], dict[float, list[float]]] = {}
    for run in runs:
        size, acc = setting(run, "data_size"), accuracy(run)
        if size is None or acc is None or run.get("from") or regularised(run):
            continue
        key = (str(setting(run, "model")), str(method(run)))
        series.setdefault(key, {}).setdefault(float(size), []).append(acc * 100)
    slopes = {}
    for key, points in series.items():
        if len(points) >= 2:
            xs = [math.log2(s) for s in points]
            ys = [mean(v) for v in points.values()]
            slopes[key] = _slope(xs, ys)
    if not slopes:
        return None
    claim = "about +2 points of score per doubling of the training data"
    mean_slope = mean(list(slopes.values()))
    low, high = POINTS_PER_DOUBLING
    verdict = "supported" if low <= mean_slope <= high else "not supported"
    evidence = "; ".join(f"{m} {meth}: {s:+.2f} points per doubling" for (m, meth), s in slopes.items())
    evidence += f" (mean {mean_slope:+.2f}; the claim: about +2)"
    return claim_result(
        "points_per_doubling",
        BELLE,
        claim,
        verdict,
        evidence,
        slopes={f"{m} {meth}": s for (m, meth), s in slopes.items()},
    )


def _slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """The least-squares slope of ys against xs (0 when the xs do not vary)."""
    mx, my = mean(xs), mean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else 0.0


def full_cost_multiple(runs: Sequence[Run]) -> dict[str, Any] | None:
    """Full FT costs 3–5× LoRA's time: device-seconds per training token, full over LoRA, matched context."""

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
    ratio = statistics.median(ratios)
    low, high = COST_RANGE
    verdict = "supported" if low <= ratio <= high else "not supported"
    evidence = (
        f"device-seconds per training token, full over LoRA: median {ratio:.2f}× over {len(ratios)} matched "
        f"pairs (range {min(ratios):.2f}–{max(ratios):.2f}×)"
    )
    return claim_result("full_cost_multiple", BELLE, claim, verdict, evidence, ratio=ratio, pairs=len(ratios))


def lora_bigger_base(runs: Sequence[Run]) -> dict[str, Any] | None:
    """LoRA benefits from a bigger base: LoRA's accuracy on the larger base (base parameters = total −
    trainable) against the smaller one, matched data, size and duration."""
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
            "cannot tell",
            "no accuracy: held-out losses of models with different tokenizers are not comparable",
        )
    keys = [k for k in CONTEXT if k != "model"]
    wins = pairs = 0
    for group in runs_by_context(lora, keys).values():
        by_model: dict[str, list[float]] = {}
        for run in group:
            by_model.setdefault(str(setting(run, "model")), []).append(float(accuracy(run) or 0))
        ordered = sorted((sizes[m], mean(v)) for m, v in by_model.items() if m in sizes)
        for (_, small), (_, big) in itertools.pairwise(ordered):
            pairs += 1
            wins += big > small
    if pairs == 0:
        return None
    evidence = f"LoRA's accuracy was higher on the bigger base in {wins}/{pairs} matched comparisons"
    return claim_result(
        "lora_bigger_base", BELLE, claim, majority_verdict(wins / pairs), evidence, wins=wins, pairs=pairs
    )
