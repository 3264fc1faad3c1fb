"""Runs that differ only in their seed (a variant), and the declared statistics comparing variants.

A variant is never a mix of learning rates, ranks or any other coordinate: `group_key` keeps everything but the
seed. A statistic over variants is a linear combination Σ wᵢ · (variant i's mean measurement), with its 95%
interval of evaluation noise (the paired bootstrap over the evaluation sequences every run kept,
`deltarank.evaluation.paired.paired_combination`; for accuracy, the binomial variance) and seed noise (Welch's t
over the seeds, `deltarank.study.claims.statistics.seed_half_width`), combined by
`deltarank.analysis.results.claim_statistic.statistic`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from deltarank.analysis.results.claim_statistic import Z95, binomial_variance, statistic
from deltarank.figures.study_rows import Run, forgetting
from deltarank.study.claims.statistics import group_key, seed_half_width
from deltarank.study.claims.verdicts import Measure, mean


@dataclass(frozen=True)
class Variant:
    """Runs that differ only in their seed, with the measurements every one of them has."""

    runs: tuple[Run, ...]
    learning: tuple[float, ...]
    forgetting: tuple[float, ...]

    @property
    def name(self) -> str:
        """The runs' names joined (one name per seed)."""
        return "+".join(str(r.get("name")) for r in self.runs)

    def per_sequence(self, part: str) -> dict[str, list[float]] | None:
        """The seeds' mean per-sequence losses of one evaluation set (`held_out`, `general`), None unless every
        run kept them on the same sequences."""
        found = [(r.get("per_sequence") or {}).get(part) for r in self.runs]
        records = [rec for rec in found if rec]
        if not records or len(records) < len(found):
            return None
        counts = list(records[0]["counts"])
        if any(list(rec["counts"]) != counts for rec in records):
            return None
        sums = [mean([float(rec["sums"][i]) for rec in records]) for i in range(len(counts))]
        return {"sums": sums, "counts": counts}

    def accuracy_examples(self) -> int | None:
        """The fewest accuracy examples of the runs (None when any has no count)."""
        found = [(r.get("learning") or {}).get("accuracy_examples") for r in self.runs]
        counts = [int(n) for n in found if n is not None]
        return min(counts) if counts and len(counts) == len(found) else None


def variants(runs: Sequence[Run], score: Measure) -> list[Variant]:
    """The runs grouped by everything but the seed, keeping the variants where every run has both
    measurements."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(group_key(run), []).append(run)
    found = []
    for members in groups.values():
        learning = [score(r) for r in members]
        forgets = [forgetting(r) for r in members]
        if all(v is not None for v in learning) and all(v is not None for v in forgets):
            found.append(Variant(tuple(members), tuple(learning), tuple(forgets)))  # type: ignore[arg-type]
    return found


def learning_statistic(a: Variant, b: Variant, label: str, names: str = "LoRA − full") -> dict[str, Any]:
    """How much less `a` learned than `b`: held-out loss a − b (nats/token), or with accuracy b − a (points);
    the claim "a learns less": > 0. `names` says which is which (`LoRA − full`)."""
    if label != "accuracy":
        return combination_statistic(
            f"held-out loss, {names}",
            "nats/token",
            [(1.0, a), (-1.0, b)],
            "learning",
            "held_out",
            (0.0, None),
        )
    first, second = names.split(" − ")
    estimate = (mean(b.learning) - mean(a.learning)) * 100
    examples = [a.accuracy_examples(), b.accuracy_examples()]
    evaluation = None
    if all(examples):
        variance = sum(
            binomial_variance(p, n)
            for p, n in ((mean(a.learning), examples[0]), (mean(b.learning), examples[1]))
            if n
        )
        evaluation = Z95 * variance**0.5 * 100  # binomial, unpaired (conservative: the examples are shared)
    seed = seed_half_width([(100.0, b.learning), (-100.0, a.learning)])
    seeds = min(len(a.runs), len(b.runs))
    return statistic(
        f"accuracy, {second} − {first}", "points", estimate, (0.0, None), evaluation, seed, seeds
    )


def combination_statistic(
    name: str,
    units: str,
    terms: Sequence[tuple[float, Variant]],
    measure: str,
    part: str,
    claim_range: tuple[float | None, float | None],
) -> dict[str, Any]:
    """Σ wᵢ · (variant i's mean `measure`) with its interval: the paired bootstrap over the `part` sequences
    (losses; `learning` is the held-out loss, so its sign is flipped back from the score) and Welch's t."""
    from deltarank.evaluation.paired import paired_combination

    sign = -1.0 if measure == "learning" else 1.0  # the learning score is minus the loss
    values = [(w, [sign * v for v in getattr(variant, measure)]) for w, variant in terms]
    estimate = sum(w * mean(v) for w, v in values)
    records = [(w, variant.per_sequence(part)) for w, variant in terms]
    evaluation = None
    if all(rec is not None for _, rec in records):
        found = paired_combination([(w, rec) for w, rec in records if rec is not None])
        if found is not None:
            evaluation = (found["ci95_high"] - found["ci95_low"]) / 2
    seeds = min(len(v.runs) for _, v in terms)
    return statistic(name, units, estimate, claim_range, evaluation, seed_half_width(values), seeds)
