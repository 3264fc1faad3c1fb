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
    counts = np.asarray(a.get("counts") or [], dtype=np.float64)
    if counts.size == 0 or list(a.get("counts") or []) != list(b.get("counts") or []) or counts.sum() <= 0:
        return None
    diff = np.asarray(a["sums"], dtype=np.float64) - np.asarray(b["sums"], dtype=np.float64)
    rng = np.random.default_rng(SEED)
    picks = rng.integers(0, counts.size, size=(resamples, counts.size))
    drawn = diff[picks].sum(axis=1) / np.maximum(counts[picks].sum(axis=1), 1.0)
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(drawn, [tail, 100 - tail])
    return {
        "estimate": float(diff.sum() / counts.sum()),
        "ci95_low": float(low),
        "ci95_high": float(high),
        "sequences": int(counts.size),
        "method": METHOD,
    }
