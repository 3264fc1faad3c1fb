"""How a run row of a study.json (`deltarank.study/1`) is read: its settings, its method and what kind of
run it is, its learning, forgetting and ΔW rank summary.

One place for the study's figures (`deltarank.figures.study`) and its claims (`deltarank.study.claims.reference`, a
layer above, which imports it from here).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from deltarank.analysis.results.medians import median
from deltarank.io.training_methods import where

Run = Mapping[str, Any]
LORA_METHODS = where("lora_like")  # lora, qlora
REGULARISERS = ("weight_decay", "attention_dropout")
DURATIONS = ("max_steps", "epochs")
# The exact-match accuracy of a uniform guess, per closed-answer set (`deltarank.evaluation.accuracy`'s
# CLOSED_ANSWER_SETS): zh-sentiment's answer is one of two words (正面 / 负面); math's answers are open
# numbers, so it has none. Declared here, in the layer the figures and the claims both read.
ACCURACY_CHANCE: dict[str, float] = {"zh-sentiment": 0.5}
BUILTIN = "builtin:"


def setting(run: Run, key: str) -> Any:
    """A run's training setting: its `settings` (what the runner resolved), else its coordinates."""
    settings = run.get("settings") or {}
    if key in settings:
        return settings[key]
    return (run.get("coordinates") or {}).get(key)


def method(run: Run) -> str | None:
    """The training method (`full`, `lora`, ...)."""
    value = setting(run, "method")
    return None if value is None else str(value)


def regularised(run: Run) -> bool:
    """Weight decay or attention dropout above 0."""
    return any(float(setting(run, k) or 0) > 0 for k in REGULARISERS)


def regularisation_label(run: Run) -> str:
    """`weight_decay 0.0001`, `weight_decay 0.0001 (decoupled)`, `attention_dropout 0.1`, ... ('' for none)."""
    parts = []
    for key in REGULARISERS:
        if float(setting(run, key) or 0) > 0:
            decoupled = key == "weight_decay" and setting(run, "weight_decay_mode") == "decoupled"
            parts.append(f"{key} {setting(run, key):g}" + (" (decoupled)" if decoupled else ""))
    return ", ".join(parts)


def is_full(run: Run) -> bool:
    """Plain full fine-tuning (no weight decay, no attention dropout)."""
    return method(run) == "full" and not regularised(run)


def is_control(run: Run) -> bool:
    """Full fine-tuning with weight decay or attention dropout (Biderman et al.'s controls)."""
    return method(run) == "full" and regularised(run)


def is_lora(run: Run) -> bool:
    """A LoRA run (lora or qlora)."""
    return method(run) in LORA_METHODS


def section(run: Run, name: str) -> Mapping[str, Any]:
    """One section of the row (learning, forgetting, diversity, cost, ranks); {} when absent."""
    return run.get(name) or {}


def number(run: Run, name: str, key: str) -> float | None:
    """`run[name][key]` as a float, None when missing."""
    value = section(run, name).get(key)
    return None if value is None else float(value)


def accuracy(run: Run) -> float | None:
    """Exact-match accuracy (0–1) of the run, if measured."""
    return number(run, "learning", "accuracy")


def accuracy_set(run: Run) -> str | None:
    """The built-in data set of a run's accuracy (`zh-sentiment` of `builtin:zh-sentiment:test`): its
    `learning.accuracy_set`, else its training data (the set an accuracy is measured on by default); None for
    anything but a built-in set."""
    name = section(run, "learning").get("accuracy_set") or setting(run, "data")
    text = "" if name is None else str(name)
    return text.removeprefix(BUILTIN).split(":")[0] if text.startswith(BUILTIN) else None


def chance_accuracy(runs: Sequence[Run]) -> float | None:
    """The accuracy of a uniform guess on the runs' accuracy set (`ACCURACY_CHANCE`); None when a run's set
    has none, or the runs were scored on sets of different chance levels."""
    levels = {ACCURACY_CHANCE.get(accuracy_set(r) or "") for r in runs}
    return levels.pop() if len(levels) == 1 else None


def held_out_loss(run: Run) -> float | None:
    """Held-out loss per trained token, if measured."""
    return number(run, "learning", "held_out_loss")


def forgetting(run: Run) -> float | None:
    """The rise of the general-text loss against the base model."""
    return number(run, "forgetting", "general_loss_rise")


def rank_summary(run: Run) -> float | None:
    """The median over module types of a run's median energy_90 (None without ΔW ranks)."""
    return median(m.get("energy_90_median") for m in section(run, "ranks").values() if isinstance(m, Mapping))


def labeller(runs: Sequence[Run]) -> Callable[[Run], str]:
    """`series_label` for the runs of one study: with the model only when the study has several, with the
    training data only when its runs trained from a base model on several data sets (a stacked run's second
    data set is named by its `from`)."""
    several = len({str(setting(r, "model")) for r in runs}) > 1
    data = len({str(setting(r, "data")) for r in runs if not r.get("from")}) > 1
    return lambda run: series_label(run, with_model=several, with_data=data)


def base_of(study: Mapping[str, Any], run: Run) -> Mapping[str, Any]:
    """The measurements of the base model a run descends from (study.json's `bases[run["base"]]`, else its
    `base`)."""
    bases = study.get("bases") or {}
    return bases.get(run.get("base")) or study.get("base") or {}


def bases(study: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """Every base model's measurements by key (`base` alone when the study names no keys)."""
    found = dict(study.get("bases") or {})
    return found or ({"base": study["base"]} if study.get("base") else {})


def series_label(run: Run, with_model: bool = True, with_data: bool = False) -> str:
    """One line of a figure per model × method (LoRA also per rank; controls named by their regulariser);
    the model by its file or directory name, left out with `with_model` False (a study of one model); the
    training data (`on builtin:code`) with `with_data`."""
    model = setting(run, "model")
    parts = [Path(str(model)).name if with_model and model else "", str(method(run))]
    if is_lora(run) and (recommended := run.get("recommendation")):  # per-module ranks: no one r to name
        parts.append(f"ranks from {recommended['from']}'s ΔW")
    elif is_lora(run) and setting(run, "lora_r") is not None:
        parts.append(f"r={setting(run, 'lora_r')}")
    if regularised(run):
        parts.append(f"+ {regularisation_label(run)}")
    if run.get(
        "from"
    ):  # the parent's readable name: without the 6-hex-digit hash `deltarank.study.design.grid` adds
        parts.append(f"from {re.sub(r'-[0-9a-f]{6}$', '', str(run['from']))}")
    if with_data and setting(run, "data") is not None:
        parts.append(f"on {setting(run, 'data')}")
    return " ".join(p for p in parts if p)
