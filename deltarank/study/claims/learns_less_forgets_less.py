"""Biderman et al. 2024's headline claim, checked against a study's rows: LoRA learns less and forgets less.

Two declared statistics per context (model, data, data size, duration, parent), each with a 95% interval
(`deltarank.analysis.results.claim_statistic`: evaluation noise from the paired bootstrap over the evaluation
sequences, seed noise from Welch's t over seeds, in quadrature):

- **learning**: held-out loss of LoRA − full fine-tuning (nats/token; accuracy: full − LoRA in points), each
  method at its best variant (the learning rate, rank, ... with the best mean over seeds); the claim: > 0.
- **forgetting at matched learning**: LoRA's forgetting − full fine-tuning's forgetting interpolated linearly
  between the two full variants whose learning brackets LoRA's (the paper's comparison); the claim: < 0. When
  LoRA's learning lies outside full fine-tuning's range, the nearest full variant in learning stands in and the
  evidence says the comparison is not matched.

A variant is a set of runs that differ only in their seed: runs at other learning rates are never pooled as
seeds. The claim is `consistent` when both statistics are in every context, `inconsistent` when one is
inconsistent in any, else `inconclusive`.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from typing import Any

from deltarank.analysis.results.claim_statistic import (
    INCONCLUSIVE,
    combined_label,
    describe_statistic,
)
from deltarank.figures.study_rows import Run, is_full, is_lora
from deltarank.study.claims.variants import Variant, combination_statistic, learning_statistic, variants
from deltarank.study.claims.verdicts import (
    BIDERMAN,
    claim_result,
    learning_measure,
    matched_by_context,
    mean,
)

CLAIM_ID = "lora_learns_less_forgets_less"
CLAIM = "LoRA learns less and forgets less than full fine-tuning"


def lora_learns_less_forgets_less(runs: Sequence[Run]) -> dict[str, Any] | None:
    """LoRA learns less and forgets less than full fine-tuning, per matched context, with its two statistics."""
    full, lora = [r for r in runs if is_full(r)], [r for r in runs if is_lora(r)]
    if not full or not lora:
        return None
    label, score = learning_measure([*full, *lora])
    contexts = []
    for matched_full, matched_lora in matched_by_context(full, lora):
        full_variants = variants(matched_full, score)
        lora_variants = variants(matched_lora, score)
        if full_variants and lora_variants:
            contexts.append(_context_statistics(full_variants, lora_variants, label))
    if not contexts:
        return claim_result(CLAIM_ID, BIDERMAN, CLAIM, INCONCLUSIVE, "no matched run has both measurements")
    verdict = combined_label(s["verdict"] for c in contexts for s in (c["learning"], c["forgetting"]))
    return claim_result(
        CLAIM_ID,
        BIDERMAN,
        CLAIM,
        verdict,
        "; ".join(_evidence(c) for c in contexts),
        learning_metric=label,
        contexts=contexts,
    )


def _context_statistics(full: Sequence[Variant], lora: Sequence[Variant], label: str) -> dict[str, Any]:
    """The learning and matched-forgetting statistics of one context's best LoRA variant."""
    best_full = max(full, key=lambda v: mean(v.learning))
    best_lora = max(lora, key=lambda v: mean(v.learning))
    learning = learning_statistic(best_lora, best_full, label)
    terms, matched = _matched_full(best_lora, full)
    forgetting_stat = combination_statistic(
        "forgetting at matched learning, LoRA − full" if matched else "forgetting, LoRA − nearest full",
        "nats/token",
        [(1.0, best_lora), *terms],
        "forgetting",
        "general",
        (None, 0.0),
    )
    return {
        "full": best_full.name,
        "lora": best_lora.name,
        "full_variants": [v.name for v in full],
        "matched": matched,
        "matched_with": [{"run": v.name, "weight": -w} for w, v in terms],
        "learning": learning,
        "forgetting": forgetting_stat,
    }


def _matched_full(lora: Variant, full: Sequence[Variant]) -> tuple[list[tuple[float, Variant]], bool]:
    """The full variants (with minus their interpolation weights) whose learning brackets LoRA's, and whether
    they do; otherwise the full variant nearest in learning alone."""
    ordered = sorted(full, key=lambda v: mean(v.learning))
    xs = [mean(v.learning) for v in ordered]
    x = mean(lora.learning)
    at = bisect.bisect_left(xs, x)
    if 0 < at < len(xs) or (at < len(xs) and xs[at] == x and len(xs) > 1):
        lo, hi = (at - 1, at) if at > 0 else (0, 1)
        t = (x - xs[lo]) / (xs[hi] - xs[lo]) if xs[hi] != xs[lo] else 0.5
        return [(-(1 - t), ordered[lo]), (-t, ordered[hi])], True
    nearest = min(ordered, key=lambda v: abs(mean(v.learning) - x))
    return [(-1.0, nearest)], False


def _evidence(found: Mapping[str, Any]) -> str:
    """One context in words: the runs compared and both statistics."""
    matched = (
        "interpolated between " + " and ".join(m["run"] for m in found["matched_with"])
        if found["matched"]
        else f"LoRA's learning is outside full fine-tuning's range: against {found['matched_with'][0]['run']}, "
        "not at matched learning"
    )
    return (
        f"{found['lora']} against {found['full']}: learning {found['learning']['verdict']}, "
        f"{describe_statistic(found['learning'])}; forgetting {found['forgetting']['verdict']} ({matched}), "
        f"{describe_statistic(found['forgetting'])}"
    )
