"""The smallest LoRA rank that learns as much as full fine-tuning, each method at its best learning rate.

Biderman et al. 2024 sweep each method's learning rate, then LoRA's rank, and compare LoRA with full fine-tuning at
matched learning. Per context (model, data, data size, duration, parent), for every LoRA rank tried:

- each method at its best variant: the learning rate (or any other setting but the seed) with the best mean
  learning over its seeds (`deltarank.study.claims.variants`; learning rates are never pooled as seeds);
- the declared statistic: held-out loss of LoRA at that rank − full fine-tuning's (nats/token; with accuracy,
  full − LoRA in points), with its 95% interval of evaluation and seed noise
  (`deltarank.study.claims.variants.learning_statistic`);
- the rank *matches* when the whole interval lies below the margin δ = 5% of full fine-tuning's learning (the
  base model's held-out loss − full's, or full's accuracy gain): LoRA keeps at least 95% of what full
  fine-tuning learned. `consistent` (matches), `inconsistent` (the interval lies entirely above δ: learns less),
  `inconclusive` otherwise (`deltarank.analysis.results.claim_statistic.interval_label`).

The smallest matching rank is the smallest rank labelled `consistent`; the claim ("some LoRA rank tried matches
full fine-tuning") is consistent in a context when one exists, inconsistent when every rank is inconsistent, and
inconclusive otherwise. The check applies to studies with LoRA at two ranks or more. A best learning rate at the
edge of its sweep is named: the sweep may not have found the method's best.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from deltarank.analysis.results.claim_statistic import (
    CONSISTENT,
    INCONCLUSIVE,
    INCONSISTENT,
    combined_label,
    describe_statistic,
    interval_label,
)
from deltarank.figures.study_rows import Run, base_of, is_full, is_lora, number, setting
from deltarank.study.claims.variants import Variant, learning_statistic, variants
from deltarank.study.claims.verdicts import (
    BIDERMAN,
    claim_result,
    learning_measure,
    matched_by_context,
    mean,
)

CLAIM_ID = "lora_rank_matching_full"
CLAIM = "a LoRA rank tried learns as much as full fine-tuning (within 5% of its learning)"
MARGIN = 0.05  # of full fine-tuning's learning


def smallest_matching_rank(runs: Sequence[Run], study: Mapping[str, Any]) -> dict[str, Any] | None:
    """Per context, each LoRA rank's learning against full fine-tuning's at their best learning rates, and the
    smallest rank that matches it (None: the study has LoRA at fewer than two ranks, or no full run)."""
    full, lora = [r for r in runs if is_full(r)], [r for r in runs if is_lora(r)]
    if not full or len({str(setting(r, "lora_r")) for r in lora}) < 2:
        return None
    label, score = learning_measure([*full, *lora])
    contexts = []
    for matched_full, matched_lora in matched_by_context(full, lora):
        full_variants = variants(matched_full, score)
        if full_variants and matched_lora:
            found = _context(full_variants, matched_lora, score, label, study)
            if found is not None:
                contexts.append(found)
    if not contexts:
        return None
    return claim_result(
        CLAIM_ID,
        BIDERMAN,
        CLAIM,
        combined_label(c["verdict"] for c in contexts),
        "; ".join(_evidence(c) for c in contexts),
        learning_metric=label,
        margin_share=MARGIN,
        contexts=contexts,
    )


def _context(
    full: Sequence[Variant], lora_runs: Sequence[Run], score: Any, label: str, study: Mapping[str, Any]
) -> dict[str, Any] | None:
    """One context: full fine-tuning's best variant, each LoRA rank's best variant and its statistic."""
    best_full = max(full, key=lambda v: mean(v.learning))
    learned = _learned(best_full, label, study)
    if learned is None or learned <= 0:
        return None
    margin = MARGIN * learned
    ranks: dict[int, list[Run]] = {}
    for run in lora_runs:
        ranks.setdefault(int(setting(run, "lora_r")), []).append(run)
    rows = []
    for r in sorted(ranks):
        found = variants(ranks[r], score)
        if not found:
            continue
        best = max(found, key=lambda v: mean(v.learning))
        stat = learning_statistic(best, best_full, label, names=f"LoRA r={r} − full")
        stat["claim_range"] = [None, margin]
        stat["verdict"] = interval_label(stat["ci95_low"], stat["ci95_high"], (None, margin))
        rows.append(
            {
                "rank": r,
                "run": best.name,
                "lr": _lr(best),
                "lr_at_edge": _at_edge(best, found),
                "share_of_full_learning": 1.0 - stat["estimate"] / learned,
                "statistic": stat,
            }
        )
    if not rows:
        return None
    matching = [row["rank"] for row in rows if row["statistic"]["verdict"] == CONSISTENT]
    labels = [row["statistic"]["verdict"] for row in rows]
    verdict = (
        CONSISTENT if matching else INCONSISTENT if all(v == INCONSISTENT for v in labels) else INCONCLUSIVE
    )
    return {
        "full": best_full.name,
        "full_lr": _lr(best_full),
        "full_lr_at_edge": _at_edge(best_full, full),
        "full_learning": learned,
        "margin": margin,
        "ranks": rows,
        "smallest_matching_rank": min(matching) if matching else None,
        "verdict": verdict,
    }


def _learned(best_full: Variant, label: str, study: Mapping[str, Any]) -> float | None:
    """Full fine-tuning's learning in the statistic's units: base held-out loss − full's (nats/token), or full's
    accuracy gain over the base (points)."""
    base = base_of(study, best_full.runs[0])
    key = "accuracy" if label == "accuracy" else "held_out_loss"
    before = number(base, "learning", key)
    if before is None:
        return None
    if label == "accuracy":
        return (mean(best_full.learning) - before) * 100
    return before + mean(best_full.learning)  # the learning score is minus the held-out loss


def _lr(found: Variant) -> float | None:
    """The variant's learning rate (its runs share it)."""
    lr = setting(found.runs[0], "lr")
    return None if lr is None else float(lr)


def _at_edge(best: Variant, among: Sequence[Variant]) -> bool:
    """True when the best variant's learning rate is the lowest or highest of those swept (of ≥ 2)."""
    lrs = sorted({lr for v in among if (lr := _lr(v)) is not None})
    lr = _lr(best)
    return len(lrs) >= 2 and lr is not None and lr in (lrs[0], lrs[-1])


def _evidence(found: Mapping[str, Any]) -> str:
    """One context in words: full's best run, each rank's statistic, the smallest matching rank."""
    edge = " (the edge of its sweep)" if found["full_lr_at_edge"] else ""
    parts = [
        f"full fine-tuning at its best lr {found['full_lr']}{edge} ({found['full']}) learned "
        f"{found['full_learning']:.4f}; the margin is {found['margin']:.4f}"
    ]
    for row in found["ranks"]:
        edge = ", the edge of its sweep" if row["lr_at_edge"] else ""
        parts.append(
            f"r={row['rank']} (lr {row['lr']}{edge}): {row['statistic']['verdict']}, "
            f"{row['share_of_full_learning']:.1%} of full's learning, {describe_statistic(row['statistic'])}"
        )
    smallest = found["smallest_matching_rank"]
    parts.append(
        f"smallest matching rank: {smallest}"
        if smallest is not None
        else "no rank tried matches full fine-tuning"
    )
    return "; ".join(parts)
