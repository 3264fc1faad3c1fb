"""Biderman et al. 2024's headline claim, checked against a study's rows: LoRA learns less and forgets less.

LoRA is compared with full fine-tuning in matched contexts (each LoRA variant against the full runs of its
context, seeds pooled), and full fine-tuning's forgetting is interpolated at each LoRA run's learning.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from deltarank.figures.study_rows import Run, forgetting, is_full, is_lora
from deltarank.study.claims.statistics import compare
from deltarank.study.claims.verdicts import (
    BIDERMAN,
    CLEAR_MAJORITY,
    CONTEXT,
    Measure,
    claim_result,
    context,
    learning_measure,
    mean,
    runs_by_context,
    shown,
)


@dataclass
class _Comparisons:
    """Matched LoRA-against-full comparisons: how many, how many LoRA learned / forgot less in, and which
    differences were within noise."""

    pairs: int = 0
    learn_less: int = 0
    forget_less: int = 0
    noise: list[str] = field(default_factory=list)

    def add(
        self,
        lora_scores: Sequence[float],
        full_scores: Sequence[float],
        lora_forgets: Sequence[float],
        full_forgets: Sequence[float],
    ) -> None:
        """Count one matched comparison (none when a side lacks a measurement)."""
        if not (full_scores and lora_scores and full_forgets and lora_forgets):
            return
        self.pairs += 1
        self.learn_less += mean(lora_scores) < mean(full_scores)
        self.forget_less += mean(lora_forgets) < mean(full_forgets)
        for what, a, b in (
            ("learning", lora_scores, full_scores),
            ("forgetting", lora_forgets, full_forgets),
        ):
            if compare(a, b)["within_noise"]:
                self.noise.append(what)


def lora_learns_less_forgets_less(runs: Sequence[Run]) -> dict[str, Any] | None:
    """LoRA learns less and forgets less than full fine-tuning (matched context), with forgetting at matched
    learning: full FT's forgetting interpolated linearly along its runs at each LoRA run's learning."""
    full, lora = [r for r in runs if is_full(r)], [r for r in runs if is_lora(r)]
    if not full or not lora:
        return None
    claim_id, claim = (
        "lora_learns_less_forgets_less",
        "LoRA learns less and forgets less than full fine-tuning",
    )
    label, score = learning_measure([*full, *lora])
    found = _matched_comparisons(full, lora, score)
    if found.pairs == 0:
        return claim_result(claim_id, BIDERMAN, claim, "cannot tell", "no matched run has both measurements")
    matched = matched_forgetting(full, lora, score)
    return claim_result(
        claim_id,
        BIDERMAN,
        claim,
        _learns_less_verdict(found),
        _learns_less_evidence(full, lora, label, score, found, matched),
        learning_metric=label,
        pairs=found.pairs,
        lora_learns_less=found.learn_less,
        lora_forgets_less=found.forget_less,
        matched_learning=matched,
    )


def _matched_comparisons(full: Sequence[Run], lora: Sequence[Run], score: Measure) -> _Comparisons:
    """Each LoRA variant (rank, learning rate, ...) against the full runs of its context, seeds pooled."""
    found = _Comparisons()
    keys = [k for k in CONTEXT if k != "seed"]
    for key, matched_full in runs_by_context(full, keys).items():
        matched_lora = [r for r in lora if context(r, keys) == key]
        full_scores, full_forgets = _measured(matched_full, score), _measured(matched_full, forgetting)
        for variant in _variants(matched_lora):
            found.add(_measured(variant, score), full_scores, _measured(variant, forgetting), full_forgets)
    return found


def _learns_less_verdict(found: _Comparisons) -> str:
    """A clear majority either way (two thirds of the matched comparisons); anything closer is mixed."""
    learns, forgets = found.learn_less / found.pairs, found.forget_less / found.pairs
    if found.noise:
        return "within noise"
    if learns >= CLEAR_MAJORITY and forgets >= CLEAR_MAJORITY:
        return "supported"
    if learns <= 1 - CLEAR_MAJORITY and forgets <= 1 - CLEAR_MAJORITY:
        return "not supported"
    return "mixed"


def _learns_less_evidence(
    full: Sequence[Run],
    lora: Sequence[Run],
    label: str,
    score: Measure,
    found: _Comparisons,
    matched: Mapping[str, Any] | None,
) -> str:
    """The comparison counts, the mean learning and forgetting of each side and the matched-learning view."""
    full_l, lora_l = _measured(full, score), _measured(lora, score)
    full_f, lora_f = _measured(full, forgetting), _measured(lora, forgetting)
    pairs = found.pairs
    evidence = (
        f"LoRA learned less in {found.learn_less}/{pairs} and forgot less in {found.forget_less}/{pairs} "
        f"matched comparisons; mean {label}: full {shown(label, mean(full_l))}, LoRA {shown(label, mean(lora_l))}; "
        f"mean forgetting (general-text loss rise): full {mean(full_f):+.4f}, LoRA {mean(lora_f):+.4f}"
    )
    if found.noise:
        evidence += f"; the difference in {', '.join(sorted(set(found.noise)))} is within noise (95% interval contains 0)"
    if matched:
        evidence += (
            f"; at matched learning (interpolated along full FT's runs) full FT forgets {matched['full']:+.4f} "
            f"where LoRA forgets {matched['lora']:+.4f} (mean over {matched['points']} LoRA runs)"
        )
    return evidence


def _measured(runs: Sequence[Run], measure: Measure) -> list[float]:
    """The measure of each run that has it."""
    return [v for r in runs if (v := measure(r)) is not None]


def _variants(runs: Sequence[Run]) -> list[list[Run]]:
    """Runs of one context split by everything but the seed (each LoRA rank or learning rate on its own)."""
    found: dict[str, list[Run]] = {}
    for run in runs:
        key = str(sorted((k, str(v)) for k, v in (run.get("coordinates") or {}).items() if k != "seed"))
        found.setdefault(key, []).append(run)
    return list(found.values())


def interpolate(points: Sequence[tuple[float, float]], x: float) -> float | None:
    """y at x on the polyline through (x, y) points sorted by x (linear; None outside their range)."""
    ordered = sorted(points)
    for (x0, y0), (x1, y1) in itertools.pairwise(ordered):
        if x0 <= x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    if len(ordered) == 1 and ordered[0][0] == x:
        return ordered[0][1]
    return None


def matched_forgetting(full: Sequence[Run], lora: Sequence[Run], score: Measure) -> dict[str, Any] | None:
    """Full FT's forgetting at each LoRA run's learning, interpolated along the full runs of the same model
    and data (over durations, sizes, learning rates); means over the LoRA runs inside full FT's range."""
    full_pairs: dict[tuple[Any, ...], list[tuple[float, float]]] = {}
    for run in full:
        s, f = score(run), forgetting(run)
        if s is not None and f is not None:
            full_pairs.setdefault(context(run, ("model", "data")), []).append((s, f))
    found_full, found_lora = [], []
    for run in lora:
        s, f = score(run), forgetting(run)
        points = full_pairs.get(context(run, ("model", "data")), [])
        if s is None or f is None or len(points) < 2:
            continue
        at = interpolate(points, s)
        if at is not None:
            found_full.append(at)
            found_lora.append(f)
    if not found_lora:
        return None
    return {"full": mean(found_full), "lora": mean(found_lora), "points": len(found_lora)}
