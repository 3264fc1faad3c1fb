"""The rank claim of Biderman et al. 2024, defined once: full fine-tuning's ΔW has 10–100× the rank of LoRA's.

Every report that states it (`reproduce`'s summary.json and report.md, a study's claims and report.md, the
README) computes it here, from the same input: the median energy_90 of the full run's ΔW per module type (over
layers), divided by the LoRA rank r. The median over module types can be taken over several *views*, each
named, and every report shows all of them side by side, since they can disagree (on SmolLM2's quick runs the
MLP view is 12.6× and the all-module view 6.4×, because k_proj/v_proj are only 192 wide). A new normalisation is
one more entry in `VIEWS`.

The verdict per view uses the three labels of `deltarank.analysis.results.claim_statistic`: `consistent` when the
multiple's 95% interval lies in the claim's 10–100× range, `inconsistent` when it lies entirely outside (above
100× too: the claim states a range), else `inconclusive`. The interval is Student's t over the seeds of the full
run (on the log of the multiple) when there are two or more (`seed_views`); with one seed it is the point itself
and the report says training noise is not included. The claim's verdict is the views' common label, and
`inconclusive` when they disagree (`view_dependent` is then true).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from deltarank.analysis.results.claim_statistic import INCONCLUSIVE, interval_label, t_half_width
from deltarank.analysis.results.medians import median

RANK_RANGE = (10.0, 100.0)
# The width-aware form of the claim: Biderman et al. measured the 10–100× of r = 16 on Llama-2-7B's 4096-wide
# matrices, that is 3.9–39% of the width. `width_share` places a run's energy_90 ÷ min(m, n) against that band,
# so a model of another width is judged on the same scale.
PAPER_WIDTH = 4096
PAPER_R = 16
WIDTH_RANGE = (RANK_RANGE[0] * PAPER_R / PAPER_WIDTH, RANK_RANGE[1] * PAPER_R / PAPER_WIDTH)
# MLP projections of the Llama/Qwen/Gemma families (fc1/fc2 for GPT-2-like and Phi models).
MLP_MODULES = frozenset({"gate_proj", "up_proj", "down_proj", "fc1", "fc2", "c_fc", "dense_h_to_4h"})


def _mlp(per_module: Mapping[str, float]) -> list[float]:
    return [v for m, v in per_module.items() if m in MLP_MODULES]


def _all_modules(per_module: Mapping[str, float]) -> list[float]:
    return list(per_module.values())


# name -> (the per-module values the view takes the median of, what a reader is told it is)
VIEWS: dict[str, tuple[Callable[[Mapping[str, float]], list[float]], str]] = {
    "mlp": (_mlp, "median over the MLP projections"),
    "all_modules": (_all_modules, "median over all module types"),
}


def view_verdict(
    multiple: float | None,
    band: tuple[float, float] = RANK_RANGE,
    interval: tuple[float, float] | None = None,
) -> str | None:
    """The view's label against `band`: from its interval when there is one, else from the multiple itself
    (`consistent` inside, `inconsistent` outside); None without a value."""
    if multiple is None:
        return None
    low, high = interval if interval is not None else (multiple, multiple)
    return interval_label(low, high, band)


def combined_verdict(verdicts: list[str | None]) -> str:
    """The views' common label; `inconclusive` when they disagree or none has a value."""
    known = {v for v in verdicts if v is not None}
    return known.pop() if len(known) == 1 else INCONCLUSIVE


def seed_interval(multiples: list[float]) -> tuple[float, float] | None:
    """The 95% Student t interval of the geometric mean of per-seed multiples (on their logarithm); None with
    fewer than two seeds or a non-positive multiple."""
    if len(multiples) < 2 or min(multiples) <= 0:
        return None
    logs = [math.log(m) for m in multiples]
    mean = sum(logs) / len(logs)
    half = t_half_width(logs)
    assert half is not None  # two or more seeds
    return math.exp(mean - half), math.exp(mean + half)


def _views(
    per_module: Mapping[str, float | None],
    divisor: float,
    band: tuple[float, float],
    unit: str,
    seeds: Sequence[Mapping[str, float | None]] = (),
) -> dict[str, dict[str, Any]]:
    """Every view of per-module values divided by `divisor`: its median, verdict against `band`, module count;
    with two or more `seeds` (the per-module values of each seed's run) the seed interval of the multiple."""
    views: dict[str, dict[str, Any]] = {}
    for name, (select, meaning) in VIEWS.items():
        multiple = _multiple(select, per_module, divisor)
        per_seed = [m for seed in seeds if (m := _multiple(select, seed, divisor)) is not None]
        interval = seed_interval(per_seed) if len(per_seed) == len(seeds) else None
        views[name] = {
            "multiple": multiple,
            "verdict": view_verdict(multiple, band, interval),
            "modules": len(select(_known(per_module))),
            "meaning": f"{meaning}, {unit}",
            "ci95": None if interval is None else list(interval),
            "seeds": max(len(seeds), 1),
        }
    return views


def _known(per_module: Mapping[str, float | None]) -> dict[str, float]:
    return {m: float(v) for m, v in per_module.items() if v is not None and not math.isnan(v)}


def _multiple(
    select: Callable[[Mapping[str, float]], list[float]],
    per_module: Mapping[str, float | None],
    divisor: float,
) -> float | None:
    middle = median(select(_known(per_module)))
    return None if middle is None or divisor <= 0 else middle / divisor


def rank_multiple(
    full_energy_90: Mapping[str, float | None],
    lora_r: float,
    seeds: Sequence[Mapping[str, float | None]] = (),
) -> dict[str, Any]:
    """The claim's numbers and verdicts for one full run (or the per-module medians over several).

    Args:
        full_energy_90: Median energy_90 of the full fine-tune's ΔW per module type (None or NaN: not
            measured).
        lora_r: The LoRA rank r the claim divides by.
        seeds: The same per-module values of each seed's full run (two or more give the views an interval).

    Returns:
        `{"lora_r", "views": {name: {"multiple", "verdict", "modules", "meaning", "ci95", "seeds"}}, "verdict",
        "view_dependent"}`; a view's multiple is None when the run has none of its module types.
    """
    views = _views(full_energy_90, lora_r, RANK_RANGE, "energy_90 ÷ r", seeds)
    return {"lora_r": lora_r, "views": views, **_verdict(views)}


def _verdict(views: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    labels = {v["verdict"] for v in views.values() if v["verdict"] is not None}
    return {"verdict": combined_verdict(list(labels)), "view_dependent": len(labels) > 1}


def width_share(
    full_share: Mapping[str, float | None], seeds: Sequence[Mapping[str, float | None]] = ()
) -> dict[str, Any]:
    """The claim on the width-aware scale: per module type the median over layers of energy_90 ÷ min(m, n)
    of the full fine-tune's ΔW, in every view, against the paper's 3.9–39% of the width (`WIDTH_RANGE`).

    Returns:
        `{"range", "views": {name: {"multiple" (the share of the width), "verdict", "modules", "meaning"}},
        "verdict"}`.
    """
    views = _views(full_share, 1.0, WIDTH_RANGE, "energy_90 ÷ width", seeds)
    return {"range": list(WIDTH_RANGE), "views": views, **_verdict(views)}


def describe(claim: Mapping[str, Any]) -> str:
    """One sentence with every view: `MLP 12.6× r = 16 (consistent), all modules 6.4× (inconsistent)`, each
    multiple with its seed interval when it has one."""
    return f"{_describe_views(claim, '.1f', '×')} of r = {claim['lora_r']:g}{_seed_note(claim)}"


def describe_width(claim: Mapping[str, Any]) -> str:
    """One sentence: `MLP 35% of the width (consistent), all modules 18% (consistent); the paper's 10–100× of
    r = 16 on 4096-wide matrices is 3.9–39%`."""
    low, high = claim["range"]
    return (
        f"{_describe_views(claim, '.0%', '')} of the width; the paper's {RANK_RANGE[0]:g}–{RANK_RANGE[1]:g}× of "
        f"r = {PAPER_R} on {PAPER_WIDTH}-wide matrices is {low:.1%}–{high:.0%}{_seed_note(claim)}"
    )


def _describe_views(claim: Mapping[str, Any], spec: str, unit: str) -> str:
    parts = []
    for name, view in claim["views"].items():
        label = name.replace("_", " ").replace("mlp", "MLP")
        value = "–" if view["multiple"] is None else format(view["multiple"], spec) + unit
        if view.get("ci95"):
            value += " [" + ", ".join(format(v, spec) for v in view["ci95"]) + "]"
        parts.append(f"{label} {value} ({view['verdict'] or 'not measured'})")
    return ", ".join(parts)


def _seed_note(claim: Mapping[str, Any]) -> str:
    """`; one seed: training noise not included` when no view has a seed interval."""
    views = claim["views"].values()
    if any(v.get("ci95") for v in views) or all(v["multiple"] is None for v in views):
        return ""
    return "; one seed: training noise not included"
