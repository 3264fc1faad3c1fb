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
    forgetting,
    is_control,
    is_full,
    is_lora,
    rank_summary,
    regularisation_label,
    section,
    setting,
)
from deltarank.study.claims.verdicts import BIDERMAN, Measure, claim_result, context, learning_measure, mean


def regularised_like_full(runs: Sequence[Run]) -> dict[str, Any] | None:
    """Full FT with weight decay or attention dropout learns and forgets like plain full FT: each control is
    no farther from the plain full run of its context (same learning rate when there is one) than LoRA is, on
    both learning and forgetting (without a LoRA run in that context: cannot tell)."""
    controls, full, lora = (
        [r for r in runs if is_control(r)],
        [r for r in runs if is_full(r)],
        [r for r in runs if is_lora(r)],
    )
    if not controls or not full:
        return None
    claim = "full fine-tuning with weight decay or attention dropout learns and forgets like plain full fine-tuning"
    label, score = learning_measure([*controls, *full, *lora])
    alike = compared = 0
    details = []
    for control in controls:
        found = _control_against_full(control, full, lora, label, score)
        if found is None:
            continue
        detail, ok = found
        details.append(detail)
        alike += bool(ok)
        compared += ok is not None
    if not details:
        return claim_result(
            "regularised_like_full", BIDERMAN, claim, "cannot tell", "no control has a matched plain full run"
        )
    if compared == 0:
        verdict = "cannot tell"
    elif alike == compared:
        verdict = "supported"
    elif alike == 0:
        verdict = "not supported"
    else:
        verdict = "mixed"
    return claim_result(
        "regularised_like_full", BIDERMAN, claim, verdict, "; ".join(details), alike=alike, compared=compared
    )


def _control_against_full(
    control: Run, full: Sequence[Run], lora: Sequence[Run], label: str, score: Measure
) -> tuple[str, bool | None] | None:
    """(detail, alike) of one control against the plain full runs of its context: alike when no farther
    from them than LoRA is (None without a LoRA run); None without a matched full run or a measurement."""
    matched = [
        r for r in full if context(r) == context(control) and setting(r, "lr") == setting(control, "lr")
    ]
    matched = matched or [r for r in full if context(r) == context(control)]
    rivals = [r for r in lora if context(r) == context(control)]
    values = _learning_forgetting(matched, score)
    cs, cf = score(control), forgetting(control)
    if not values or cs is None or cf is None:
        return None
    fs, ff = mean([v[0] for v in values]), mean([v[1] for v in values])
    d_learn, d_forget = cs - fs, cf - ff
    rival = _learning_forgetting(rivals, score)
    ok: bool | None
    if rival:
        gap_learn = abs(mean([v[0] for v in rival]) - fs)
        gap_forget = abs(mean([v[1] for v in rival]) - ff)
        ok = abs(d_learn) <= gap_learn and abs(d_forget) <= gap_forget
        reason = f"LoRA's gap {gap_learn:.4f} / {gap_forget:+.4f}"
    else:
        ok = None
        reason = "no LoRA run to measure the difference against"
    name = regularisation_label(control)
    return f"{name}: Δ{label} {_delta(label, d_learn)}, Δforgetting {d_forget:+.4f} ({reason})", ok


def _learning_forgetting(runs: Sequence[Run], score: Measure) -> list[tuple[float, float]]:
    """(learning score, forgetting) of the runs that have both."""
    pairs = [(score(r), forgetting(r)) for r in runs]
    return [(s, f) for s, f in pairs if s is not None and f is not None]


def _delta(label: str, score_change: float) -> str:
    """A change of the learning score in the reader's units (accuracy points; loss, sign flipped back)."""
    return f"{score_change * 100:+.1f} points" if label == "accuracy" else f"{-score_change:+.4f}"


def diversity_order(runs: Sequence[Run], study: Mapping[str, Any]) -> dict[str, Any] | None:
    """Full FT's outputs are less diverse than the base's, LoRA's in between (distinct strings per prompt;
    the base value is the mean over the base models of the compared runs)."""
    key = "distinct_per_prompt"
    full = [v for r in runs if is_full(r) and (v := section(r, "diversity").get(key)) is not None]
    lora = [v for r in runs if is_lora(r) and (v := section(r, "diversity").get(key)) is not None]
    compared = [
        r for r in runs if (is_full(r) or is_lora(r)) and section(r, "diversity").get(key) is not None
    ]
    base_values = {
        str(r.get("base")): v
        for r in compared
        if (v := (base_of(study, r).get("diversity") or {}).get(key)) is not None
    }
    if not full or not lora or not base_values:
        return None
    base_value = mean(list(base_values.values()))
    claim = "full fine-tuning's outputs are less diverse than the base model's, LoRA's in between"
    f, l_, b = mean(full), mean(lora), float(base_value)
    if f < l_ <= b:
        verdict = "supported"
    elif f < b:
        verdict = "mixed"
    else:
        verdict = "not supported"
    evidence = f"distinct output strings per prompt: base {b:.2f}, LoRA {l_:.2f} (mean of {len(lora)}), full {f:.2f} (mean of {len(full)})"
    return claim_result("diversity_order", BIDERMAN, claim, verdict, evidence, base=b, lora=l_, full=f)


def full_rank_multiple(runs: Sequence[Run]) -> dict[str, Any] | None:
    """Full FT's ΔW has 10–100× the rank of a typical LoRA configuration, as
    `deltarank.analysis.results.rank_claim` defines it (the one definition `reproduce`'s summary uses too):
    per module type, the median over the study's full runs of their median energy_90, in the MLP and the
    all-module view, divided by the smallest LoRA rank r of the study (the typical configuration; the
    all-module multiple of every other r is listed), else by LoRA's own measured energy_90."""
    full_runs = [r for r in runs if is_full(r) and rank_summary(r) is not None]
    lora_runs = [r for r in runs if is_lora(r)]
    ranks = sorted({float(v) for r in lora_runs if (v := setting(r, "lora_r")) is not None})
    measured = [v for r in lora_runs if (v := rank_summary(r)) is not None]
    if not full_runs or not (ranks or measured):
        return None
    text = "full fine-tuning's ΔW has 10–100× the rank of LoRA's"
    modules = list(dict.fromkeys(m for r in full_runs for m in section(r, "ranks")))
    per_module = {
        m: median((section(r, "ranks").get(m) or {}).get("energy_90_median") for r in full_runs)
        for m in modules
    }
    full_rank = median(per_module.values())
    assert full_rank is not None  # every full run has a rank summary
    lora_rank = median(measured)
    reference = ranks[0] if ranks else lora_rank
    claim = rank_multiple(per_module, reference or 0.0)
    width = width_share(
        {
            m: median(
                (section(r, "ranks").get(m) or {}).get("energy_90_over_width_median") for r in full_runs
            )
            for m in modules
        }
    )
    views = claim["views"]
    ratio = views["all_modules"]["multiple"]
    evidence = f"median energy_90 of full FT's ΔW {full_rank:g}"
    if ranks:
        evidence += " = " + ", ".join(f"{full_rank / r:.1f}× r = {r:g}" for r in ranks)
    evidence += f"; against {'r' if ranks else 'LoRA energy_90'} = {reference:g}: {describe(claim)}"
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
        lora_r=ranks[0] if ranks else None,
        lora_energy_90=lora_rank,
        ratio=ratio if ratio is not None else math.inf,
        mlp_ratio=views["mlp"]["multiple"],
        views=views,
        width_views=width["views"],
        ratios={f"{r:g}": full_rank / r for r in ranks},
    )
