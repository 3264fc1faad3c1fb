"""The claims of Biderman et al. 2024 ("LoRA Learns Less and Forgets Less") beyond its headline one, each
checked against a study's rows.

Regularised full fine-tuning behaves like plain full fine-tuning, output diversity falls from the base to LoRA
to full fine-tuning, and full fine-tuning's ΔW has 10–100× the rank of LoRA's. The headline claim, LoRA learns
less and forgets less, is `deltarank.study.claims.learns_less_forgets_less`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from deltarank.analysis.results.claim_statistic import (
    INCONCLUSIVE,
    combined_label,
    describe_statistic,
    interval_label,
    statistic,
)
from deltarank.analysis.results.medians import median
from deltarank.analysis.results.rank_claim import (
    RANK_RANGE,
    describe,
    describe_width,
    rank_multiple,
    width_share,
)
from deltarank.figures.study_rows import (
    Run,
    base_of,
    is_control,
    is_full,
    is_lora,
    rank_summary,
    regularisation_label,
    section,
    setting,
)
from deltarank.study.claims.matched_rank import smallest_matching_rank
from deltarank.study.claims.statistics import group_key, seed_half_width
from deltarank.study.claims.variants import Variant, combination_statistic, learning_statistic, variants
from deltarank.study.claims.verdicts import (
    BIDERMAN,
    CONTEXT,
    Measure,
    claim_result,
    context,
    learning_measure,
    mean,
)


def regularised_like_full(runs: Sequence[Run]) -> dict[str, Any] | None:
    """Full FT with weight decay or attention dropout learns and forgets like plain full FT: for each control
    variant, control − plain full (same learning rate when there is one) of held-out loss and of forgetting,
    each with its interval, inside ±LoRA's gap from the same plain full variant (an equivalence margin: no
    farther from full than LoRA is). Without a LoRA run in the context there is no margin: inconclusive."""
    controls, full, lora = (
        [r for r in runs if is_control(r)],
        [r for r in runs if is_full(r)],
        [r for r in runs if is_lora(r)],
    )
    if not controls or not full:
        return None
    claim = "full fine-tuning with weight decay or attention dropout learns and forgets like plain full fine-tuning"
    label, score = learning_measure([*controls, *full, *lora])
    found = [
        c
        for control in variants(controls, score)
        if (c := _control_against_full(control, full, lora, label, score))
    ]
    if not found:
        return claim_result(
            "regularised_like_full", BIDERMAN, claim, INCONCLUSIVE, "no control has a matched plain full run"
        )
    verdict = combined_label(s["verdict"] for c in found for s in (c["learning"], c["forgetting"]))
    evidence = "; ".join(
        f"{c['control']} against {c['full']}: learning {c['learning']['verdict']}, "
        f"{describe_statistic(c['learning'])}; forgetting {c['forgetting']['verdict']}, "
        f"{describe_statistic(c['forgetting'])}"
        for c in found
    )
    return claim_result("regularised_like_full", BIDERMAN, claim, verdict, evidence, controls=found)


def _control_against_full(
    control: Variant, full: Sequence[Run], lora: Sequence[Run], label: str, score: Measure
) -> dict[str, Any] | None:
    """The control's two statistics against the plain full variant of its context (same learning rate first)
    with LoRA's gaps as the margins; None without a matched full run."""
    keys = [k for k in CONTEXT if k != "seed"]
    here = context(control.runs[0], keys)
    in_context = [r for r in full if context(r, keys) == here]
    same_lr = [r for r in in_context if setting(r, "lr") == setting(control.runs[0], "lr")]
    plain = variants(same_lr or in_context, score)
    if not plain:
        return None
    reference = max(plain, key=lambda v: mean(v.learning))
    rivals = variants([r for r in lora if context(r, keys) == here], score)
    rival = max(rivals, key=lambda v: mean(v.learning)) if rivals else None
    margins: list[tuple[float | None, float | None]] = []
    for measure in ("learning", "forgetting"):
        gap = abs(mean(getattr(rival, measure)) - mean(getattr(reference, measure))) if rival else None
        margins.append((None, None) if gap is None else (-gap, gap))
    name = regularisation_label(control.runs[0])
    learning = learning_statistic(reference, control, label, f"full − {name}")
    learning = _with_range(learning, margins[0], rival is not None)
    forgets = combination_statistic(
        f"forgetting, {name} − full",
        "nats/token",
        [(1.0, control), (-1.0, reference)],
        "forgetting",
        "general",
        margins[1],
    )
    forgets = _with_range(forgets, margins[1], rival is not None)
    return {"control": control.name, "full": reference.name, "lora": rival.name if rival else None,
            "learning": learning, "forgetting": forgets}  # fmt: skip


def _with_range(
    found: dict[str, Any], margin: tuple[float | None, float | None], has_margin: bool
) -> dict[str, Any]:
    """The statistic judged against the equivalence margin; without a LoRA run no margin: inconclusive."""
    if not has_margin:
        return {**found, "claim_range": [None, None], "verdict": INCONCLUSIVE}
    return {
        **found,
        "claim_range": list(margin),
        "verdict": interval_label(found["ci95_low"], found["ci95_high"], margin),
    }


def diversity_order(runs: Sequence[Run], study: Mapping[str, Any]) -> dict[str, Any] | None:
    """Full FT's outputs are less diverse than the base's, LoRA's in between (distinct strings per prompt; the
    base value is the mean over the base models of the compared runs): full − LoRA < 0 and LoRA − base < 0,
    each with Welch's t interval over seeds (one seed per method: no interval, inconclusive)."""
    key = "distinct_per_prompt"

    def distinct(run: Run) -> float | None:
        value = section(run, "diversity").get(key)
        return None if value is None else float(value)

    full = [v for r in runs if is_full(r) and (v := distinct(r)) is not None]
    lora = [v for r in runs if is_lora(r) and (v := distinct(r)) is not None]
    compared = [r for r in runs if (is_full(r) or is_lora(r)) and distinct(r) is not None]
    base_values = {
        str(r.get("base")): v
        for r in compared
        if (v := (base_of(study, r).get("diversity") or {}).get(key)) is not None
    }
    if not full or not lora or not base_values:
        return None
    claim = "full fine-tuning's outputs are less diverse than the base model's, LoRA's in between"
    b = float(mean(list(base_values.values())))
    seeds = min(len(full), len(lora))
    below_lora = statistic(
        "distinct strings per prompt, full − LoRA",
        "strings",
        mean(full) - mean(lora),
        (None, 0.0),
        None,
        seed_half_width([(1.0, full), (-1.0, lora)]),
        seeds,
    )
    below_base = statistic(
        "distinct strings per prompt, LoRA − base", "strings", mean(lora) - b, (None, 0.0), None,
        seed_half_width([(1.0, lora)]), len(lora),
    )  # fmt: skip
    verdict = combined_label([below_lora["verdict"], below_base["verdict"]])
    evidence = (
        f"distinct output strings per prompt: base {b:.2f}, LoRA {mean(lora):.2f} (mean of {len(lora)}), full "
        f"{mean(full):.2f} (mean of {len(full)}); {describe_statistic(below_lora, '+.2f')}; "
        f"{describe_statistic(below_base, '+.2f')}"
    )
    return claim_result(
        "diversity_order", BIDERMAN, claim, verdict, evidence, base=b, lora=mean(lora), full=mean(full),
        statistics=[below_lora, below_base],
    )  # fmt: skip


def full_rank_multiple(runs: Sequence[Run], study: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    """Full FT's ΔW has 10–100× the rank of a typical LoRA configuration, as
    `deltarank.analysis.results.rank_claim` defines it (the one definition `reproduce`'s summary uses too):
    per module type, the median energy_90 of the full variant that learned most (its seeds' median; other
    learning rates are never pooled in), in the MLP and the all-module view, divided by a LoRA rank r: the
    smallest rank that learns as much as that full variant when the study sweeps ranks (`matched_rank`, given
    `study`), else the smallest LoRA rank r of the study (the typical configuration; the all-module multiple
    of every other r is listed), else LoRA's own measured energy_90. Dividing by a rank that learns less
    (r = 4 beside r = 16) would inflate the multiple. Two or more seeds give each view a t interval
    (`rank_claim.seed_interval`)."""
    ranked = [r for r in runs if is_full(r) and rank_summary(r) is not None]
    lora_runs = [r for r in runs if is_lora(r)]
    ranks = sorted({float(v) for r in lora_runs if (v := setting(r, "lora_r")) is not None})
    measured = [v for r in lora_runs if (v := rank_summary(r)) is not None]
    if not ranked or not (ranks or measured):
        return None
    full_runs = _chosen_full_variant(ranked)
    text = "full fine-tuning's ΔW has 10–100× the rank of LoRA's"
    modules = list(dict.fromkeys(m for r in full_runs for m in section(r, "ranks")))
    per_module = {
        m: median((section(r, "ranks").get(m) or {}).get("energy_90_median") for r in full_runs)
        for m in modules
    }
    seeds = [_per_module(r, "energy_90_median") for r in full_runs] if len(full_runs) > 1 else []
    full_rank = median(per_module.values())
    assert full_rank is not None  # every full run has a rank summary
    lora_rank = median(measured)
    matched = _matching_rank(runs, full_runs, study)
    reference = matched or (ranks[0] if ranks else lora_rank)
    claim = rank_multiple(per_module, reference or 0.0, seeds)
    width_key = "energy_90_over_width_median"
    width = width_share(
        {m: median((section(r, "ranks").get(m) or {}).get(width_key) for r in full_runs) for m in modules},
        [_per_module(r, width_key) for r in full_runs] if len(full_runs) > 1 else [],
    )
    views = claim["views"]
    ratio = views["all_modules"]["multiple"]
    evidence = f"median energy_90 of full FT's ΔW {full_rank:g}"
    if ranks:
        evidence += " = " + ", ".join(f"{full_rank / r:.1f}× r = {r:g}" for r in ranks)
    against = "the smallest LoRA rank learning as much, r" if matched else "r" if ranks else "LoRA energy_90"
    evidence += f"; against {against} = {reference:g}: {describe(claim)}"
    if lora_rank:
        evidence += f"; LoRA's own ΔW energy_90 {lora_rank:g} ({full_rank / lora_rank:.1f}×)"
    if ratio is not None and ratio > RANK_RANGE[1]:
        evidence += " (above the 100× of the claim)"
    if any(v["multiple"] is not None for v in width["views"].values()):
        evidence += f"; width-aware: {describe_width(width)} ({width['verdict']})"
    return claim_result(
        "full_rank_multiple",
        BIDERMAN,
        text,
        claim["verdict"],
        evidence,
        full_energy_90=full_rank,
        lora_r=matched or (ranks[0] if ranks else None),
        lora_r_matched=matched is not None,
        lora_energy_90=lora_rank,
        ratio=ratio if ratio is not None else math.inf,
        mlp_ratio=views["mlp"]["multiple"],
        views=views,
        view_dependent=claim["view_dependent"],
        width_views=width["views"],
        ratios={f"{r:g}": full_rank / r for r in ranks},
    )


def _matching_rank(
    runs: Sequence[Run], full_runs: Sequence[Run], study: Mapping[str, Any] | None
) -> float | None:
    """The smallest LoRA rank that learns as much as `full_runs` (the chosen full variant), from the
    `matched_rank` context whose best full run they are; None without `study`, a rank sweep or a match."""
    if study is None:
        return None
    found = smallest_matching_rank(runs, study)
    names = {str(r.get("name")) for r in full_runs}
    for found_context in (found or {}).get("numbers", {}).get("contexts", []):
        smallest = found_context.get("smallest_matching_rank")
        if set(str(found_context.get("full")).split("+")) == names and smallest is not None:
            return float(smallest)
    return None


def _chosen_full_variant(full: Sequence[Run]) -> list[Run]:
    """The seeds of the full variant that learned most (the first variant when learning is not measured)."""
    groups: dict[str, list[Run]] = {}
    for run in full:
        groups.setdefault(group_key(run), []).append(run)
    _, score = learning_measure(full)
    measured = [g for g in groups.values() if all(score(r) is not None for r in g)]
    if not measured:
        return next(iter(groups.values()))
    return max(measured, key=lambda g: mean([float(score(r) or 0.0) for r in g]))


def _per_module(run: Run, key: str) -> dict[str, float | None]:
    """One run's `key` per module type from its rank summary."""
    return {m: (values or {}).get(key) for m, values in section(run, "ranks").items()}
