"""The rank claim of Biderman et al. 2024, defined once: full fine-tuning's ΔW has 10–100× the rank of LoRA's.

Every report that states it (`reproduce`'s summary.json and report.md, a study's claims and report.md, the
README) computes it here, from the same input: the median energy_90 of the full run's ΔW per module type (over
layers), divided by the LoRA rank r. The median over module types can be taken over several *views*, each
named, and every report shows all of them side by side, since they can disagree (on SmolLM2's quick runs the
MLP view is 12.6× and the all-module view 6.4×, because k_proj/v_proj are only 192 wide). A new normalisation is
one more entry in `VIEWS`.

The verdict per view is `supported` when the multiple lies in the claim's 10–100× range and `not supported`
otherwise (above 100× too: the claim states a range). The claim's verdict is `supported` when every view
supports it, `not supported` when none does, and `view-dependent` when the views disagree.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

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


def view_verdict(multiple: float | None, band: tuple[float, float] = RANK_RANGE) -> str | None:
    """`supported` inside the claim's range (10–100× by default), `not supported` outside it, None without a
    value."""
    if multiple is None:
        return None
    low, high = band
    return "supported" if low <= multiple <= high else "not supported"


def combined_verdict(verdicts: list[str | None]) -> str:
    """`supported` when every view with a value supports the claim, `not supported` when none does,
    `view-dependent` when they disagree, `cannot tell` without any value."""
    known = {v for v in verdicts if v is not None}
    if not known:
        return "cannot tell"
    return known.pop() if len(known) == 1 else "view-dependent"


def _views(
    per_module: Mapping[str, float | None], divisor: float, band: tuple[float, float], unit: str
) -> dict[str, dict[str, Any]]:
    """Every view of per-module values divided by `divisor`: its median, verdict against `band`, module count."""
    known = {m: float(v) for m, v in per_module.items() if v is not None and not math.isnan(v)}
    views: dict[str, dict[str, Any]] = {}
    for name, (select, meaning) in VIEWS.items():
        values = select(known)
        middle = median(values)
        multiple = None if middle is None or divisor <= 0 else middle / divisor
        views[name] = {
            "multiple": multiple,
            "verdict": view_verdict(multiple, band),
            "modules": len(values),
            "meaning": f"{meaning}, {unit}",
        }
    return views


def rank_multiple(full_energy_90: Mapping[str, float | None], lora_r: float) -> dict[str, Any]:
    """The claim's numbers and verdicts for one full run (or the per-module medians over several).

    Args:
        full_energy_90: Median energy_90 of the full fine-tune's ΔW per module type (None or NaN: not
            measured).
        lora_r: The LoRA rank r the claim divides by.

    Returns:
        `{"lora_r", "views": {name: {"multiple", "verdict", "modules", "meaning"}}, "verdict"}`; a view's
        multiple is None when the run has none of its module types.
    """
    views = _views(full_energy_90, lora_r, RANK_RANGE, "energy_90 ÷ r")
    verdict = combined_verdict([v["verdict"] for v in views.values()])
    return {"lora_r": lora_r, "views": views, "verdict": verdict}


def width_share(full_share: Mapping[str, float | None]) -> dict[str, Any]:
    """The claim on the width-aware scale: per module type the median over layers of energy_90 ÷ min(m, n)
    of the full fine-tune's ΔW, in every view, against the paper's 3.9–39% of the width (`WIDTH_RANGE`).

    Returns:
        `{"range", "views": {name: {"multiple" (the share of the width), "verdict", "modules", "meaning"}},
        "verdict"}`.
    """
    views = _views(full_share, 1.0, WIDTH_RANGE, "energy_90 ÷ width")
    return {
        "range": list(WIDTH_RANGE),
        "views": views,
        "verdict": combined_verdict([v["verdict"] for v in views.values()]),
    }


def describe(claim: Mapping[str, Any]) -> str:
    """One sentence with every view: `MLP 12.6× r = 16 (supported), all modules 6.4× (not supported)`."""
    parts = []
    for name, view in claim["views"].items():
        label = name.replace("_", " ").replace("mlp", "MLP")
        value = "–" if view["multiple"] is None else f"{view['multiple']:.1f}×"
        parts.append(f"{label} {value} ({view['verdict'] or 'not measured'})")
    return f"{', '.join(parts)} of r = {claim['lora_r']:g}"


def describe_width(claim: Mapping[str, Any]) -> str:
    """One sentence: `MLP 35% of the width (supported), all modules 18% (supported); the paper's 10–100× of
    r = 16 on 4096-wide matrices is 3.9–39%`."""
    parts = []
    for name, view in claim["views"].items():
        label = name.replace("_", " ").replace("mlp", "MLP")
        value = "–" if view["multiple"] is None else f"{view['multiple']:.0%}"
        parts.append(f"{label} {value} ({view['verdict'] or 'not measured'})")
    low, high = claim["range"]
    return (
        f"{', '.join(parts)} of the width; the paper's {RANK_RANGE[0]:g}–{RANK_RANGE[1]:g}× of r = {PAPER_R} on "
        f"{PAPER_WIDTH}-wide matrices is {low:.1%}–{high:.0%}"
    )
