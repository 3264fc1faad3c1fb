"""The 95% intervals the study figures draw, each one the study already computed or the report's combination of
them, read from study.json (`deltarank.study/1`).

Figures read files and never evaluate; they import neither `deltarank.evaluation` nor `deltarank.study` (the
layers in `pyproject.toml`), so no interval is recomputed here:

- a run's held-out loss change and general-text loss rise (forgetting: the estimate of KL(base ‖ tuned) per
  token) carry their evaluation-noise interval in the row, `learning.held_out_loss_change_ci95` and
  `forgetting.general_loss_rise_ci95`: the paired bootstrap over the evaluation sequences of the row's
  `per_sequence` losses against the base's (`deltarank.evaluation.paired.paired_difference`, called by the
  study's measure step). A run without per-sequence losses has none, and gets no bar;
- a run's accuracy: the binomial half-width z₀.₉₇₅ · √(p(1 − p)/n) over its `accuracy_examples`, the
  evaluation noise the claims give an accuracy (`deltarank.study.claims.belle`, `variants`); an accuracy gain
  over the base adds the base's half-width in quadrature (unpaired, as the claims do: conservative);
- a point that averages k runs: the report's rule (`deltarank.analysis.results.claim_statistic.statistic`),
  the evaluation half-width of the mean and the seed half-width added in quadrature. The seed half-width is
  the Student t interval of the seeds that study.json's `groups` carries (`ci95_half_width` of the metric,
  `deltarank.study.claims.statistics.mean_interval`), used when the k runs are exactly one group (they differ
  in seed only); a point averaging several settings (learning rates) gets evaluation noise alone, for their
  spread is not noise. The evaluation half-width of a mean accuracy is z₀.₉₇₅ · √(Σ pᵢ(1 − pᵢ)/nᵢ) / k (the
  claims' binomial of a mean); of a mean held-out loss, the mean of the runs' half-widths: the runs share
  the evaluation sequences, so this is the interval of fully correlated errors, at least as wide as the
  report's bootstrap of the seeds' mean per-sequence losses (`deltarank.study.claims.variants`), which the
  figures cannot call. A held-out loss's bar is the half-width of its change from the base, drawn about the
  loss: the base is one model, the same for every run of a line.

Distinct outputs per prompt carry the t interval over prompts that `count_diversity` stores
(`diversity.distinct_per_prompt_ci95`), `diversity_interval`.

The legend's title says which noises the bars hold (`bars_note`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from deltarank.analysis.results.claim_statistic import Z95, binomial_variance, statistic
from deltarank.figures import study_rows as rows

Run = rows.Run
Interval = tuple[float, float]  # (low, high)
INTERVAL_GID = "interval"  # an error bar's collection: `interval:<series>`, on the plane `interval-x:`, `-y:`
EVALUATION = "evaluation"
SEEDS = "seeds"
METRICS = {"accuracy": "learning.accuracy", "held_out_loss": "learning.held_out_loss"}


def stored(run: Run, name: str, key: str) -> Interval | None:
    """The interval study.json keeps beside `run[name][key]` (`key_ci95`: [low, high]), None without one."""
    found = rows.section(run, name).get(f"{key}_ci95")
    if not isinstance(found, list | tuple) or len(found) != 2 or any(v is None for v in found):
        return None
    return float(found[0]), float(found[1])


def binomial_half_width(p: float, n: int) -> float:
    """The 95% half-width of an accuracy p over n examples: z₀.₉₇₅ · √(p(1 − p)/n)."""
    return Z95 * math.sqrt(binomial_variance(p, n))


def accuracy_half_width(measured: Mapping[str, Any]) -> float | None:
    """The binomial half-width of a row's (or a base's) accuracy; None without accuracy or example count."""
    learning = measured.get("learning") or {}
    p, n = learning.get("accuracy"), learning.get("accuracy_examples")
    return None if p is None or not n else binomial_half_width(float(p), int(n))


def forgetting_interval(run: Run) -> Interval | None:
    """The evaluation-noise interval of a run's forgetting (its general-text loss rise), as study.json keeps it."""
    return stored(run, "forgetting", "general_loss_rise")


def learning_interval(run: Run, base: Mapping[str, Any], accuracy: bool) -> Interval | None:
    """The interval of a run's learning on the learning–forgetting plane: the drop of its held-out loss (the
    stored interval of the change, negated), or with `accuracy` its accuracy gain over `base` ± the two
    binomial half-widths in quadrature."""
    if not accuracy:
        change = stored(run, "learning", "held_out_loss_change")
        return None if change is None else (-change[1], -change[0])
    gain = rows.number(run, "learning", "accuracy_change")
    halves = (accuracy_half_width(run), accuracy_half_width(base))
    if gain is None or halves[0] is None or halves[1] is None:
        return None
    half = math.hypot(halves[0], halves[1])
    return gain - half, gain + half


def diversity_interval(measured: Sequence[Mapping[str, Any]]) -> Interval | None:
    """The 95% interval of the mean distinct outputs per prompt of one or more diversity sections (a base, or the
    runs of a series): each section's t interval over its prompts (`distinct_per_prompt_ci95`, clipped to a
    count's range), the mean of their ends when there are several (the runs share the prompts: fully correlated
    errors, as for a mean held-out loss); None unless every section has one."""
    found = [d.get("distinct_per_prompt_ci95") for d in measured]
    ends = [(float(i[0]), float(i[1])) for i in found if isinstance(i, list | tuple) and len(i) == 2]
    if not found or len(ends) != len(found):
        return None
    return sum(e[0] for e in ends) / len(ends), sum(e[1] for e in ends) / len(ends)


def evaluation_half_width(members: Sequence[Run], metric: str) -> float | None:
    """The evaluation-noise half-width of the members' mean `metric` (`accuracy`, `held_out_loss`); None unless
    every member has its own."""
    if metric == "accuracy":
        parts = [accuracy_half_width(r) for r in members]
        if not members or any(h is None for h in parts):
            return None
        return math.sqrt(sum((h or 0.0) ** 2 for h in parts)) / len(members)
    found = [stored(r, "learning", "held_out_loss_change") for r in members]
    if not members or any(i is None for i in found):
        return None
    return sum((i[1] - i[0]) / 2 for i in found if i is not None) / len(members)


def seed_half_width(members: Sequence[Run], metric: str, groups: Sequence[Mapping[str, Any]]) -> float | None:
    """The seed half-width of the members' mean `metric` that study.json's `groups` keeps, when the members are
    exactly one group of two or more seeds; else None."""
    names = {r.get("name") for r in members}
    for group in groups:
        if len(members) >= 2 and set(group.get("runs") or []) == names:
            found = ((group.get("metrics") or {}).get(METRICS[metric]) or {}).get("ci95_half_width")
            return None if found is None else float(found)
    return None


def point_interval(
    members: Sequence[Run], metric: str, groups: Sequence[Mapping[str, Any]]
) -> tuple[Interval, frozenset[str]] | None:
    """The 95% interval of the members' mean `metric` (`accuracy`, `held_out_loss`), with the noises it holds
    (`evaluation`, `seeds`); None when neither is known."""
    values = [rows.number(r, "learning", metric) for r in members]
    if not values or any(v is None for v in values):
        return None
    estimate = sum(v or 0.0 for v in values) / len(values)
    evaluation = evaluation_half_width(members, metric)
    seed = seed_half_width(members, metric, groups)
    found = statistic(metric, "", estimate, (None, None), evaluation, seed, len(members))
    if found["ci95_low"] is None:
        return None
    kinds = frozenset(k for k, h in ((EVALUATION, evaluation), (SEEDS, seed)) if h is not None)
    return (found["ci95_low"], found["ci95_high"]), kinds


def bars_note(kinds: Sequence[frozenset[str]]) -> str:
    """The figure's note on its error bars, from the noises each bar holds: `bars: 95% CI, seeds + evaluation
    noise`, `bars: 95% CI, evaluation noise only`, ...; '' without bars."""
    found = [k for k in kinds if k]
    if not found:
        return ""
    if all(k == {EVALUATION, SEEDS} for k in found):
        return "bars: 95% CI, seeds + evaluation noise"
    if all(k == {EVALUATION} for k in found):
        return "bars: 95% CI, evaluation noise only"
    if all(k == {SEEDS} for k in found):
        return "bars: 95% CI, seeds only"
    return "bars: 95% CI, evaluation noise (+ seeds where averaged)"
