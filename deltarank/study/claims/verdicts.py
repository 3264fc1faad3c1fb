"""What every claim check shares: the claim record and its verdicts, runs matched on context, the learning score.

A check returns a claim record (`claim_result`) whose source is a reference study (`BIDERMAN`, `BELLE`), with
the declared statistics behind it (`deltarank.analysis.results.claim_statistic`: an estimate with units, its 95%
interval of evaluation and seed noise) and one of three verdicts: `consistent` (every interval inside the
claim's range), `inconsistent` (an interval entirely outside it) or `inconclusive` (anything else, a missing
measurement included).

Learning is the exact-match accuracy where every compared run has one, else the held-out loss (lower = more
learned); forgetting is the rise of the loss on the base model's own general text. Runs are matched on their
context: model, data, data size, duration (max_steps, epochs), seed and parent.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from deltarank.figures.study_rows import Run, accuracy, held_out_loss, setting

BIDERMAN = "Biderman et al. 2024"
BELLE = "BELLE, Sun et al. 2023"
CONTEXT = ("model", "data", "data_size", "max_steps", "epochs", "seed")

Measure = Callable[[Run], "float | None"]


def claim_result(
    claim_id: str, source: str, claim: str, verdict: str, evidence: str, **numbers: Any
) -> dict[str, Any]:
    """One checked claim as the report reads it.

    Args:
        claim_id: The claim's stable identifier.
        source: The reference study that makes the claim.
        claim: The claim in words.
        verdict: One of the verdicts of this module.
        evidence: The numbers behind the verdict, in words.
        **numbers: The same numbers, machine-readable.
    """
    return {
        "id": claim_id,
        "source": source,
        "claim": claim,
        "verdict": verdict,
        "evidence": evidence,
        "numbers": numbers,
    }


def context(run: Run, keys: Sequence[str] = CONTEXT) -> tuple[Any, ...]:
    """What two runs must share to be compared (and the parent of a stacked run)."""
    return (*(str(setting(run, k)) for k in keys), str(run.get("from")))


def runs_by_context(runs: Sequence[Run], keys: Sequence[str] = CONTEXT) -> dict[tuple[Any, ...], list[Run]]:
    """The runs grouped by their context over `keys`, in the order first seen."""
    found: dict[tuple[Any, ...], list[Run]] = {}
    for run in runs:
        found.setdefault(context(run, keys), []).append(run)
    return found


def matched_by_context(first: Sequence[Run], second: Sequence[Run]) -> list[tuple[list[Run], list[Run]]]:
    """The runs of `first` and of `second` that share a context over every key but the seed (seeds are what a
    variant pools), one pair of lists per context of `first`, in the order first seen."""
    keys = [k for k in CONTEXT if k != "seed"]
    return [
        (runs, [r for r in second if context(r, keys) == key])
        for key, runs in runs_by_context(first, keys).items()
    ]


def learning_measure(runs: Sequence[Run]) -> tuple[str, Measure]:
    """(label, score) where a higher score means more learned: accuracy when every run has one, else
    minus the held-out loss."""
    if runs and all(accuracy(r) is not None for r in runs):
        return "accuracy", accuracy

    def minus_loss(run: Run) -> float | None:
        loss = held_out_loss(run)
        return None if loss is None else -loss

    return "held-out loss", minus_loss


def shown(label: str, score: float) -> str:
    """A learning score as the reader knows it: accuracy in %, loss positive."""
    return f"{score:.1%}" if label == "accuracy" else f"{-score:.4f}"


def mean(values: Sequence[float]) -> float:
    """The arithmetic mean of a non-empty sequence."""
    return sum(values) / len(values)
