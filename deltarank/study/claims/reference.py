"""The reference studies' claims, each checked against a study's rows (study.json alone, nothing hard-coded).

Biderman et al. 2024 ("LoRA Learns Less and Forgets Less": `deltarank.study.claims.learns_less_forgets_less` and
`deltarank.study.claims.biderman`) and BELLE (Sun et al. 2023, arXiv 2304.08109: `deltarank.study.claims.belle`).
A claim is checked only when the study has the runs it needs (else it is left out); each check returns its
verdict and the numbers behind it (`deltarank.study.claims.verdicts`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from deltarank.figures.study_rows import Run, setting
from deltarank.study.claims.belle import full_cost_multiple, lora_bigger_base, points_per_doubling
from deltarank.study.claims.biderman import diversity_order, full_rank_multiple, regularised_like_full
from deltarank.study.claims.learns_less_forgets_less import lora_learns_less_forgets_less
from deltarank.study.claims.matched_rank import smallest_matching_rank
from deltarank.study.claims.verdicts import BELLE, BIDERMAN
from deltarank.train.builtin_self_samples import is_self_samples

Check = Callable[[Sequence[Run]], "dict[str, Any] | None"]


def claims_of(study: Mapping[str, Any]) -> dict[str, tuple[Check, ...]]:
    """Each reference study's checks (the diversity check compares with the base models' measurements)."""
    return {
        BIDERMAN: (
            lora_learns_less_forgets_less,
            regularised_like_full,
            functools.partial(diversity_order, study=study),
            functools.partial(full_rank_multiple, study=study),
            functools.partial(smallest_matching_rank, study=study),
        ),
        BELLE: (points_per_doubling, full_cost_multiple, lora_bigger_base),
    }


def check_claims(study: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The claims that apply to a study (by its name: `belle`, `biderman`/`quick`; any other name: all)
    and whose runs it has. Runs trained on `builtin:self-samples` are nulls, measured against the runs they
    stand beside (`deltarank.study.measure.nulls`), never a context of a claim; nor are runs with recommended ranks
    (`recommend:`: report.md's evidence-based ranks section compares them)."""
    name = str((study.get("study") or {}).get("name", "")).lower()
    sources = [s for s, key in ((BELLE, "belle"), (BIDERMAN, "biderman")) if key in name]
    if "quick" in name or "reproduce" in name:
        sources = [BIDERMAN]
    runs = [r for r in study.get("runs") or [] if not is_self_samples(str(setting(r, "data")))]  # nulls
    runs = [r for r in runs if not r.get("recommendation")]  # ranks per module: no one LoRA rank to compare
    found = []
    checks = claims_of(study)
    for source in sources or list(checks):
        for check in checks[source]:
            result = check(runs)
            if result is not None:
                found.append(result)
    return found
