"""The evaluation-noise interval of a loss difference between two models measured on the same sequences.

Two models' losses on one held-out set (or one forgetting set) pair up sequence by sequence
(`deltarank.evaluation.loss.sequence_losses`: each sequence's summed cross-entropy and trained-token count).
The difference of their token-weighted mean losses, Σ(a − b) / Σ count, gets a 95% percentile interval from a
paired bootstrap over the sequences (resampled with replacement, 2000 times, a fixed seed): the spread that
the choice of evaluation sequences alone puts on the difference. Training noise (another seed) is not in it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

RESAMPLES = 2000
CONFIDENCE = 0.95
SEED = 0
METHOD = "paired bootstrap over sequences (evaluation noise; training noise not included)"


def paired_difference(
    a: Mapping[str, Sequence[float]], b: Mapping[str, Sequence[float]], resamples: int = RESAMPLES
) -> dict[str, Any] | None:
    """The difference of token-weighted mean losses a − b with its bootstrap interval.

    Args:
        a, b: `{"sums": [...], "counts": [...]}` of the same sequences (`sequence_losses`).
        resamples: Bootstrap resamples.

    Returns:
        `{"estimate", "ci95_low", "ci95_high", "sequences", "method"}`; None when the two were not measured on
        the same sequences (other counts) or on none.
    """
    return paired_combination([(1.0, a), (-1.0, b)], resamples)


def paired_combination(
    terms: Sequence[tuple[float, Mapping[str, Sequence[float]]]], resamples: int = RESAMPLES
) -> dict[str, Any] | None:
    """Σ wᵢ · (token-weighted mean loss of model i) over models measured on the same sequences, with the 95%
    interval of the paired bootstrap over those sequences (a difference is [(1, a), (−1, b)]; full fine-tuning
    interpolated between two runs at matched learning is two terms with weights summing to 1).

    Args:
        terms: (weight, `{"sums", "counts"}`) per model, every one of the same sequences.
        resamples: Bootstrap resamples.

    Returns:
        `{"estimate", "ci95_low", "ci95_high", "sequences", "method"}`; None when the models were not measured
        on the same sequences (other counts), on none, or there is no term.
    """
    if not terms:
        return None
    reference = list(terms[0][1].get("counts") or [])
    counts = np.asarray(reference, dtype=np.float64)
    same = all(list(t.get("counts") or []) == reference for _, t in terms)
    if counts.size == 0 or not same or counts.sum() <= 0:
        return None
    combined = sum(w * np.asarray(t["sums"], dtype=np.float64) for w, t in terms)
    combined = np.asarray(combined, dtype=np.float64)
    rng = np.random.default_rng(SEED)
    picks = rng.integers(0, counts.size, size=(resamples, counts.size))
    drawn = combined[picks].sum(axis=1) / np.maximum(counts[picks].sum(axis=1), 1.0)
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(drawn, [tail, 100 - tail])
    return {
        "estimate": float(combined.sum() / counts.sum()),
        "ci95_low": float(low),
        "ci95_high": float(high),
        "sequences": int(counts.size),
        "method": METHOD,
    }


def paired_share(
    part: Mapping[str, Sequence[float]],
    whole: Mapping[str, Sequence[float]],
    reference: Mapping[str, Sequence[float]],
    resamples: int = RESAMPLES,
) -> dict[str, Any] | None:
    """The share of `whole`'s change from `reference` that `part` makes, (part − ref) / (whole − ref), with its
    bootstrap interval (the three measured on the same sequences: the token counts cancel, so the share is
    Σ(part − ref) / Σ(whole − ref) over the sums of each resample).

    Args:
        part, whole, reference: `{"sums": [...], "counts": [...]}` of the same sequences (`sequence_losses`).
        resamples: Bootstrap resamples.

    Returns:
        `{"estimate", "ci95_low", "ci95_high", "sequences", "method"}`; None when the three were not measured on
        the same sequences, or `whole` does not differ from `reference`.
    """
    counts = list(reference.get("counts") or [])
    if not counts or any(list(m.get("counts") or []) != counts for m in (part, whole)):
        return None
    ref = np.asarray(reference["sums"], dtype=np.float64)
    numerator = np.asarray(part["sums"], dtype=np.float64) - ref
    denominator = np.asarray(whole["sums"], dtype=np.float64) - ref
    if denominator.sum() == 0:
        return None
    rng = np.random.default_rng(SEED)
    picks = rng.integers(0, len(counts), size=(resamples, len(counts)))
    with np.errstate(divide="ignore", invalid="ignore"):
        drawn = numerator[picks].sum(axis=1) / denominator[picks].sum(axis=1)
    drawn = drawn[np.isfinite(drawn)]  # a resample whose sequences cancel out has no share
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(drawn, [tail, 100 - tail]) if drawn.size else (np.nan, np.nan)
    if not (np.isfinite(low) and np.isfinite(high)):
        return None
    return {
        "estimate": float(numerator.sum() / denominator.sum()),
        "ci95_low": float(low),
        "ci95_high": float(high),
        "sequences": len(counts),
        "method": METHOD,
    }
