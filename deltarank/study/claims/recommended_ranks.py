"""Evidence-based LoRA ranks against the study's other low-rank runs: does a LoRA whose per-module ranks came
from a measured ΔW (`recommend:`, `deltarank recommend`) learn more, and forget less, than uniform LoRA and
AdaLoRA trained on the same data for the same steps?

Per recommended variant (its runs over seeds) and each LoRA or AdaLoRA variant of its context (model, data, data
size, duration, parent; `deltarank.study.claims.verdicts.matched_by_context`), two declared statistics with their
95% intervals (`deltarank.study.claims.variants`: the paired bootstrap over the evaluation sequences, and Welch's
t over the seeds where there are two or more):

- **learning**: held-out loss of the recommended − the other's (nats/token; accuracy: the other's − recommended's,
  points); the claim "the recommended ranks learn more": < 0;
- **forgetting**: forgetting of the recommended − the other's (nats/token); the claim "they forget less": < 0.

Each statistic's verdict is `consistent`, `inconsistent` or `inconclusive`
(`deltarank.analysis.results.claim_statistic.interval_label`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from deltarank.analysis.results.claim_statistic import interval_label
from deltarank.figures.study_rows import Run, is_lora, method
from deltarank.study.claims.variants import Variant, combination_statistic, learning_statistic, variants
from deltarank.study.claims.verdicts import learning_measure, matched_by_context

CLAIM_RANGE = (None, 0.0)  # recommended − other < 0: learns more (lower loss), forgets less
COMPARED = ("adalora",)  # besides the LoRA-like methods: the adaptive-rank method


def is_recommended(run: Run) -> bool:
    """A run whose LoRA ranks came from a recommendation (study.json `recommendation`)."""
    return bool(run.get("recommendation"))


def compared(run: Run) -> bool:
    """A low-rank run a recommended one is compared with: LoRA at its own rank(s), or AdaLoRA."""
    return not is_recommended(run) and (is_lora(run) or method(run) in COMPARED)


def recommended_comparisons(runs: Sequence[Run]) -> list[dict[str, Any]]:
    """Each recommended variant against each LoRA or AdaLoRA variant of its context: the run names, their
    trainable parameters, and the learning and forgetting statistics (empty without a recommended run)."""
    recommended = [r for r in runs if is_recommended(r)]
    others = [r for r in runs if compared(r)]
    if not recommended or not others:
        return []
    label, score = learning_measure([*recommended, *others])
    found = []
    for mine, theirs in matched_by_context(recommended, others):
        for ours in variants(mine, score):
            for other in variants(theirs, score):
                found.append(_comparison(ours, other, label))
    return found


def _comparison(ours: Variant, other: Variant, label: str) -> dict[str, Any]:
    names = f"{ours.name} − {other.name}"
    learning = learning_statistic(ours, other, label, names=names)
    learning["claim_range"] = list(CLAIM_RANGE)  # the other way round from "learns less"
    learning["verdict"] = interval_label(learning["ci95_low"], learning["ci95_high"], CLAIM_RANGE)
    forgetting = combination_statistic(
        f"forgetting, {names}",
        "nats/token",
        [(1.0, ours), (-1.0, other)],
        "forgetting",
        "general",
        CLAIM_RANGE,
    )
    return {
        "recommended": ours.name,
        "other": other.name,
        "other_method": method(other.runs[0]),
        "learning_metric": label,
        "learning": learning,
        "forgetting": forgetting,
    }
