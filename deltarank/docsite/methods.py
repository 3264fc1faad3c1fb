"""The training methods page, read from the method registry and the ΔW forms of the analysis."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from deltarank.docsite.markdown import NO_VALUE, code, summary, table
from deltarank.docsite.study_keys import option_flags

NO_DELTA = "Changes no weight, so it has no ΔW; `deltarank spectrum ADAPTER_DIR` analyses its own matrices."


def method_options(method: Any, train_config: type) -> list[str]:
    """The train options that are a method's own: the fields of its sections and its own fields."""
    return [
        option_flags(f).split(", ")[0]
        for f in dataclasses.fields(train_config)
        if f.metadata.get("section") in method.sections or f.name in method.own_fields
    ]


def methods_page(
    registry: Mapping[str, Any], forms: Mapping[str, Callable[..., Any]], train_config: type
) -> str:
    """The methods page: one row per registry entry, then each method's ΔW as its form's docstring states it.

    Args:
        registry: Method name -> `TrainingMethod` (`deltarank.io.training_methods.REGISTRY`).
        forms: Delta kind -> the function forming that ΔW (`deltarank.analysis.maths.deltas.FORMS`).
        train_config: The train config dataclass (whose field sections say which options are a method's).
    """
    rows = [
        (
            code(m.name),
            m.display,
            m.family,
            m.delta_form if m.has_delta else "no ΔW",
            code(m.delta_kind) if m.delta_kind else NO_VALUE,
            m.rank_bound,
            code(f"{m.default_lr:g}"),
            _targets(m),
            code(m.peft_type) if m.peft_type else NO_VALUE,
        )
        for m in registry.values()
    ]
    header = ("method", "name", "family", "ΔW", "kind", "rank bound", "default lr", "targets", "peft type")
    parts = [
        "# Training methods",
        "Every method `deltarank train --method` accepts, generated from the method registry "
        "(`deltarank.io.training_methods.REGISTRY`). Families: `full` (every weight), `weights` (a peft adapter "
        "on the weights), `prompt` (virtual tokens), `added` (new layers; the base unchanged). `kind` is the "
        "`kind` of its records in a spectrum; `rank bound` the `rank_bound` they carry (— : only min(out, in) "
        "bounds it).",
        table(header, rows),
        "## ΔW of each method",
        "How `deltarank spectrum` forms each method's ΔW from its saved tensors "
        "(`deltarank.analysis.maths.deltas.FORMS`), and the method's own options.",
    ]
    for m in registry.values():
        form = forms.get(m.delta_kind) if m.delta_kind else None
        text = summary(form) if form else NO_DELTA
        options = method_options(m, train_config)
        own = ", ".join(code(o) for o in options) if options else NO_VALUE
        parts += [f"### {m.name}", f"{m.display}: {text}", f"Options: {own}."]
    return "\n\n".join(parts) + "\n"


def _targets(method: Any) -> str:
    """The layers a method adapts by default (`--target-modules`): none for the methods without a ΔW."""
    if not method.has_delta or method.family == "full":
        return NO_VALUE
    return code(method.default_targets) if method.default_targets else "peft's per-model default"
