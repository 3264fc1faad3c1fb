"""The reference studies' claims, each checked against a study's rows (study.json alone, nothing hard-coded).

Biderman et al. 2024 ("LoRA Learns Less and Forgets Less") and BELLE (Sun et al. 2023, arXiv 2304.08109).
A claim is checked only when the study has the runs it needs (else it is left out); each check returns its
verdict and the numbers behind it:

- `supported`, `not supported`, `mixed` (the runs disagree), `within noise` (repeated seeds: the 95% interval
  of the deciding difference contains 0) or `cannot tell` (the runs exist but a needed measurement does not).

Learning is the exact-match accuracy where every compared run has one, else the held-out loss (lower = more
learned); forgetting is the rise of the loss on the base model's own general text. Runs are matched on their
context: model, data, data size, duration (max_steps, epochs), seed and parent.
"""

from __future__ import annotations

import functools
import itertools
import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from deltarank.figures.study_rows import (
    Run,
    accuracy,
    base_of,
    forgetting,
    held_out_loss,
    is_control,
    is_full,
    is_lora,
    method,
    rank_summary,
    regularisation_label,
    regularised,
    section,
    setting,
)
from deltarank.study.statistics import compare

CONTEXT = ("model", "data", "data_size", "max_steps", "epochs", "seed")
BIDERMAN = "Biderman et al. 2024"
BELLE = "BELLE, Sun et al. 2023"
RANK_RANGE = (10.0, 100.0)
COST_RANGE = (3.0, 5.0)
POINTS_PER_DOUBLING = (1.0, 3.0)  # "about +2 points"


# ------------------------------------------------------------------------------------------------ run facts


def context(run: Run, keys: Sequence[str] = CONTEXT) -> tuple[Any, ...]:
    """What two runs must share to be compared (and the parent of a stacked run)."""
    return (*(str(setting(run, k)) for k in keys), str(run.get("from")))


def learning_measure(runs: Sequence[Run]) -> tuple[str, Callable[[Run], float | None]]:
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


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def _by_context(runs: Sequence[Run], keys: Sequence[str] = CONTEXT) -> dict[tuple[Any, ...], list[Run]]:
    found: dict[tuple[Any, ...], list[Run]] = {}
    for run in runs:
        found.setdefault(context(run, keys), []).append(run)
    return found


def _result(
    claim_id: str, source: str, claim: str, verdict: str, evidence: str, **numbers: Any
) -> dict[str, Any]:
    return {
        "id": claim_id,
        "source": source,
        "claim": claim,
        "verdict": verdict,
        "evidence": evidence,
        "numbers": numbers,
    }


CLEAR_MAJORITY = 2 / 3


def _majority(share: float) -> str:
    return "supported" if share > 0.5 else "not supported"


# --------------------------------------------------------------------------------------------- the claims


def lora_learns_less_forgets_less(runs: Sequence[Run]) -> dict[str, Any] | None:
    """LoRA learns less and forgets less than full fine-tuning (matched context), with forgetting at matched
    learning: full FT's forgetting interpolated linearly along its runs at each LoRA run's learning."""
    full, lora = [r for r in runs if is_full(r)], [r for r in runs if is_lora(r)]
    if not full or not lora:
        return None
    claim = "LoRA learns less and forgets less than full fine-tuning"
    label, score = learning_measure([*full, *lora])
    full_by = _by_context(full, [k for k in CONTEXT if k != "seed"])
    learn_less = forget_less = pairs = 0
    noise: list[str] = []
    for key, matched_full in full_by.items():
        matched_lora = [r for r in lora if context(r, [k for k in CONTEXT if k != "seed"]) == key]
        full_scores = [s for r in matched_full if (s := score(r)) is not None]
        full_forgets = [f for r in matched_full if (f := forgetting(r)) is not None]
        for variant in _variants(matched_lora):
            lora_scores = [s for r in variant if (s := score(r)) is not None]
            lora_forgets = [f for r in variant if (f := forgetting(r)) is not None]
            if not (full_scores and lora_scores and full_forgets and lora_forgets):
                continue
            pairs += 1
            learn_less += _mean(lora_scores) < _mean(full_scores)
            forget_less += _mean(lora_forgets) < _mean(full_forgets)
            for what, a, b in (
                ("learning", lora_scores, full_scores),
                ("forgetting", lora_forgets, full_forgets),
            ):
                if compare(a, b)["within_noise"]:
                    noise.append(what)
    if pairs == 0:
        return _result(
            "lora_learns_less_forgets_less",
            BIDERMAN,
            claim,
            "cannot tell",
            "no matched run has both measurements",
        )
    full_l = [s for r in full if (s := score(r)) is not None]
    lora_l = [s for r in lora if (s := score(r)) is not None]
    full_f = [f for r in full if (f := forgetting(r)) is not None]
    lora_f = [f for r in lora if (f := forgetting(r)) is not None]
    learns, forgets = learn_less / pairs, forget_less / pairs
    # A clear majority either way (two thirds of the matched comparisons); anything closer is mixed.
    if noise:
        verdict = "within noise"
    elif learns >= CLEAR_MAJORITY and forgets >= CLEAR_MAJORITY:
        verdict = "supported"
    elif learns <= 1 - CLEAR_MAJORITY and forgets <= 1 - CLEAR_MAJORITY:
        verdict = "not supported"
    else:
        verdict = "mixed"
    evidence = (
        f"LoRA learned less in {learn_less}/{pairs} and forgot less in {forget_less}/{pairs} matched comparisons; "
        f"mean {label}: full {shown(label, _mean(full_l))}, LoRA {shown(label, _mean(lora_l))}; mean forgetting "
        f"(general-text loss rise): full {_mean(full_f):+.4f}, LoRA {_mean(lora_f):+.4f}"
    )
    if noise:
        evidence += (
            f"; the difference in {', '.join(sorted(set(noise)))} is within noise (95% interval contains 0)"
        )
    matched = matched_forgetting(full, lora, score)
    if matched:
        evidence += (
            f"; at matched learning (interpolated along full FT's runs) full FT forgets {matched['full']:+.4f} "
            f"where LoRA forgets {matched['lora']:+.4f} (mean over {matched['points']} LoRA runs)"
        )
    return _result(
        "lora_learns_less_forgets_less",
        BIDERMAN,
        claim,
        verdict,
        evidence,
        learning_metric=label,
        pairs=pairs,
        lora_learns_less=learn_less,
        lora_forgets_less=forget_less,
        matched_learning=matched,
    )


def _variants(runs: Sequence[Run]) -> list[list[Run]]:
    """Runs of one context split by everything but the seed (each LoRA rank or learning rate on its own)."""
    found: dict[str, list[Run]] = {}
    for run in runs:
        key = str(sorted((k, str(v)) for k, v in (run.get("coordinates") or {}).items() if k != "seed"))
        found.setdefault(key, []).append(run)
    return list(found.values())


def interpolate(points: Sequence[tuple[float, float]], x: float) -> float | None:
    """y at x on the polyline through (x, y) points sorted by x (linear; None outside their range)."""
    ordered = sorted(points)
    for (x0, y0), (x1, y1) in itertools.pairwise(ordered):
        if x0 <= x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    if len(ordered) == 1 and ordered[0][0] == x:
        return ordered[0][1]
    return None


def matched_forgetting(
    full: Sequence[Run], lora: Sequence[Run], score: Callable[[Run], float | None]
) -> dict[str, Any] | None:
    """Full FT's forgetting at each LoRA run's learning, interpolated along the full runs of the same model
    and data (over durations, sizes, learning rates); means over the LoRA runs inside full FT's range."""
    full_pairs: dict[tuple[Any, ...], list[tuple[float, float]]] = {}
    for run in full:
        s, f = score(run), forgetting(run)
        if s is not None and f is not None:
            full_pairs.setdefault(context(run, ("model", "data")), []).append((s, f))
    found_full, found_lora = [], []
    for run in lora:
        s, f = score(run), forgetting(run)
        points = full_pairs.get(context(run, ("model", "data")), [])
        if s is None or f is None or len(points) < 2:
            continue
        at = interpolate(points, s)
        if at is not None:
            found_full.append(at)
            found_lora.append(f)
    if not found_lora:
        return None
    return {"full": _mean(found_full), "lora": _mean(found_lora), "points": len(found_lora)}


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
        matched = [
            r for r in full if context(r) == context(control) and setting(r, "lr") == setting(control, "lr")
        ]
        matched = matched or [r for r in full if context(r) == context(control)]
        rivals = [r for r in lora if context(r) == context(control)]
        values = _learning_forgetting(matched, score)
        cs, cf = score(control), forgetting(control)
        if not values or cs is None or cf is None:
            continue
        fs, ff = _mean([v[0] for v in values]), _mean([v[1] for v in values])
        d_learn, d_forget = cs - fs, cf - ff
        rival = _learning_forgetting(rivals, score)
        name = regularisation_label(control)
        if rival:
            gap_learn = abs(_mean([v[0] for v in rival]) - fs)
            gap_forget = abs(_mean([v[1] for v in rival]) - ff)
            ok = abs(d_learn) <= gap_learn and abs(d_forget) <= gap_forget
            reason = f"LoRA's gap {gap_learn:.4f} / {gap_forget:+.4f}"
        else:
            ok = None
            reason = "no LoRA run to measure the difference against"
        compared += 1
        alike += bool(ok)
        details.append(f"{name}: Δ{label} {_delta(label, d_learn)}, Δforgetting {d_forget:+.4f} ({reason})")
        if ok is None:
            compared -= 1
    if not details:
        return _result(
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
    return _result(
        "regularised_like_full", BIDERMAN, claim, verdict, "; ".join(details), alike=alike, compared=compared
    )


def _learning_forgetting(
    runs: Sequence[Run], score: Callable[[Run], float | None]
) -> list[tuple[float, float]]:
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
    base_value = _mean(list(base_values.values()))
    claim = "full fine-tuning's outputs are less diverse than the base model's, LoRA's in between"
    f, l_, b = _mean(full), _mean(lora), float(base_value)
    if f < l_ <= b:
        verdict = "supported"
    elif f < b:
        verdict = "mixed"
    else:
        verdict = "not supported"
    evidence = f"distinct output strings per prompt: base {b:.2f}, LoRA {l_:.2f} (mean of {len(lora)}), full {f:.2f} (mean of {len(full)})"
    return _result("diversity_order", BIDERMAN, claim, verdict, evidence, base=b, lora=l_, full=f)


def full_rank_multiple(runs: Sequence[Run]) -> dict[str, Any] | None:
    """Full FT's ΔW needs 10–100× the rank of a typical LoRA configuration: the median energy_90 of full FT's
    ΔW (over module types and runs) divided by the smallest LoRA rank r of the study (the typical
    configuration; the ratio to every other r is listed), else by LoRA's own measured energy_90."""
    full = [v for r in runs if is_full(r) and (v := rank_summary(r)) is not None]
    lora_runs = [r for r in runs if is_lora(r)]
    ranks = sorted({float(v) for r in lora_runs if (v := setting(r, "lora_r")) is not None})
    measured = [v for r in lora_runs if (v := rank_summary(r)) is not None]
    if not full or not (ranks or measured):
        return None
    claim = "full fine-tuning's ΔW has 10–100× the rank of LoRA's"
    full_rank = statistics.median(full)
    lora_rank = statistics.median(measured) if measured else None
    reference = ranks[0] if ranks else lora_rank
    ratio = full_rank / reference if reference else math.inf
    low, high = RANK_RANGE
    verdict = "supported" if low <= ratio <= high else "not supported"
    evidence = f"median energy_90 of full FT's ΔW {full_rank:g}"
    if ranks:
        evidence += " = " + ", ".join(f"{full_rank / r:.1f}× r = {r:g}" for r in ranks)
    if lora_rank:
        evidence += f"; LoRA's own ΔW energy_90 {lora_rank:g} ({full_rank / lora_rank:.1f}×)"
    if ratio > high:
        evidence += " (above the 100× of the claim)"
    return _result(
        "full_rank_multiple",
        BIDERMAN,
        claim,
        verdict,
        evidence,
        full_energy_90=full_rank,
        lora_r=ranks[0] if ranks else None,
        lora_energy_90=lora_rank,
        ratio=ratio,
        ratios={f"{r:g}": full_rank / r for r in ranks},
    )


def points_per_doubling(runs: Sequence[Run]) -> dict[str, Any] | None:
    """About +2 accuracy points per doubling of the data: the least-squares slope of accuracy (%) against
    log2(data size), per model and method, means over seeds at each size."""
    series: dict[tuple[str, str], dict[float, list[float]]] = {}
    for run in runs:
        size, acc = setting(run, "data_size"), accuracy(run)
        if size is None or acc is None or run.get("from") or regularised(run):
            continue
        key = (str(setting(run, "model")), str(method(run)))
        series.setdefault(key, {}).setdefault(float(size), []).append(acc * 100)
    slopes = {}
    for key, points in series.items():
        if len(points) >= 2:
            xs = [math.log2(s) for s in points]
            ys = [_mean(v) for v in points.values()]
            slopes[key] = _slope(xs, ys)
    if not slopes:
        return None
    claim = "about +2 points of score per doubling of the training data"
    mean_slope = _mean(list(slopes.values()))
    low, high = POINTS_PER_DOUBLING
    verdict = "supported" if low <= mean_slope <= high else "not supported"
    evidence = "; ".join(f"{m} {meth}: {s:+.2f} points per doubling" for (m, meth), s in slopes.items())
    evidence += f" (mean {mean_slope:+.2f}; the claim: about +2)"
    return _result(
        "points_per_doubling",
        BELLE,
        claim,
        verdict,
        evidence,
        slopes={f"{m} {meth}": s for (m, meth), s in slopes.items()},
    )


def _slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    mx, my = _mean(xs), _mean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else 0.0


def full_cost_multiple(runs: Sequence[Run]) -> dict[str, Any] | None:
    """Full FT costs 3–5× LoRA's time: device-seconds per training token, full over LoRA, matched context."""

    def per_token(run: Run) -> float | None:
        cost = section(run, "cost")
        seconds, tokens = cost.get("device_seconds"), cost.get("tokens")
        return float(seconds) / float(tokens) if seconds and tokens else None

    ratios = []
    full_by = _by_context([r for r in runs if is_full(r)])
    for run in runs:
        if not is_lora(run) or (lora_cost := per_token(run)) is None:
            continue
        matched = [c for r in full_by.get(context(run), []) if (c := per_token(r)) is not None]
        if matched:
            ratios.append(_mean(matched) / lora_cost)
    if not ratios:
        return None
    claim = "full fine-tuning costs 3–5× LoRA's training time"
    ratio = statistics.median(ratios)
    low, high = COST_RANGE
    verdict = "supported" if low <= ratio <= high else "not supported"
    evidence = (
        f"device-seconds per training token, full over LoRA: median {ratio:.2f}× over {len(ratios)} matched "
        f"pairs (range {min(ratios):.2f}–{max(ratios):.2f}×)"
    )
    return _result("full_cost_multiple", BELLE, claim, verdict, evidence, ratio=ratio, pairs=len(ratios))


def lora_bigger_base(runs: Sequence[Run]) -> dict[str, Any] | None:
    """LoRA benefits from a bigger base: LoRA's accuracy on the larger base (base parameters = total −
    trainable) against the smaller one, matched data, size and duration."""
    lora = [r for r in runs if is_lora(r) and not r.get("from")]
    sizes: dict[str, float] = {}
    for run in lora:
        cost = section(run, "cost")
        if cost.get("total_parameters") is not None:
            sizes[str(setting(run, "model"))] = float(cost["total_parameters"]) - float(
                cost.get("trainable_parameters") or 0
            )
    if len(sizes) < 2:
        return None
    claim = "LoRA benefits from a bigger base model"
    if not all(accuracy(r) is not None for r in lora):
        return _result(
            "lora_bigger_base",
            BELLE,
            claim,
            "cannot tell",
            "no accuracy: held-out losses of models with different tokenizers are not comparable",
        )
    keys = [k for k in CONTEXT if k != "model"]
    wins = pairs = 0
    for group in _by_context(lora, keys).values():
        by_model: dict[str, list[float]] = {}
        for run in group:
            by_model.setdefault(str(setting(run, "model")), []).append(float(accuracy(run) or 0))
        ordered = sorted((sizes[m], _mean(v)) for m, v in by_model.items() if m in sizes)
        for (_, small), (_, big) in itertools.pairwise(ordered):
            pairs += 1
            wins += big > small
    if pairs == 0:
        return None
    evidence = f"LoRA's accuracy was higher on the bigger base in {wins}/{pairs} matched comparisons"
    return _result(
        "lora_bigger_base", BELLE, claim, _majority(wins / pairs), evidence, wins=wins, pairs=pairs
    )


Check = Callable[[Sequence[Run]], "dict[str, Any] | None"]


def claims_of(study: Mapping[str, Any]) -> dict[str, tuple[Check, ...]]:
    """Each reference study's checks (the diversity check compares with the base models' measurements)."""
    return {
        BIDERMAN: (
            lora_learns_less_forgets_less,
            regularised_like_full,
            functools.partial(diversity_order, study=study),
            full_rank_multiple,
        ),
        BELLE: (points_per_doubling, full_cost_multiple, lora_bigger_base),
    }


def check_claims(study: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The claims that apply to a study (by its name: `belle`, `biderman`/`quick`; any other name: all)
    and whose runs it has."""
    name = str((study.get("study") or {}).get("name", "")).lower()
    sources = [s for s, key in ((BELLE, "belle"), (BIDERMAN, "biderman")) if key in name]
    if "quick" in name or "reproduce" in name:
        sources = [BIDERMAN]
    runs = list(study.get("runs") or [])
    found = []
    checks = claims_of(study)
    for source in sources or list(checks):
        for check in checks[source]:
            result = check(runs)
            if result is not None:
                found.append(result)
    return found
