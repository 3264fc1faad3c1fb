"""report.md's "Intruder mitigation" section: each run beside its mitigated model (study.json `runs[].mitigated`,
measured with `evaluate: {mitigate: λ}`: `deltarank.study.measure.mitigation`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from deltarank.study.report.cells import fmt, forgetting_cell

# (column, section, key, format) of a measure shown before → after; its interval is `<key>_ci95` where kept.
MEASURES = (
    ("Δ held-out loss", "learning", "held_out_loss_change", "+.4f"),
    ("accuracy", "learning", "accuracy", ".1%"),
    ("forgetting", "forgetting", "general_loss_rise", "+.4f"),
)


INTRO = (
    "Each run with every intruder direction of its weights (a top-k singular direction of W₀ + ΔW far from all "
    "of W₀'s: |cos| < ε) scaled to λ·σ, written to RUN/mitigated/ (`deltarank intruders BASE RUN --mitigate λ "
    "-o RUN/mitigated`) and evaluated as the run is; intruders: the directions scaled. Changes are against the "
    "base model, with their 95% paired-bootstrap intervals in brackets."
)


def mitigation_table(
    runs: Sequence[Mapping[str, Any]],
) -> tuple[list[str], list[str], list[list[str]]] | None:
    """(notes, header, rows) of the runs with a `mitigated` block: λ, the intruder directions scaled, and each
    learning and forgetting measure before → after (with its 95% interval where the row has one); notes name
    the runs the tool could not mitigate. None when no run has the block."""
    mitigated = [run for run in runs if isinstance(run.get("mitigated"), Mapping)]
    if not mitigated:
        return None
    shown = [m for m in MEASURES if any(_value(run, m[1], m[2]) is not None for run in mitigated)]
    rows, notes = [], []
    for run in mitigated:
        block = run["mitigated"]
        if "note" in block:
            notes.append(f"- {run.get('name')}: {block['note']}.")
            continue
        cells = [str(run.get("name")), fmt(block.get("lambda"), "g"), fmt(block.get("intruders"), "d")]
        cells += [f"{_cell(run, m)} → {_cell(block, m)}" for m in shown]
        rows.append(cells)
    header = ["run", "λ", "intruders", *(f"{m[0]} before → after" for m in shown)]
    return notes, header, rows


def _value(row: Mapping[str, Any], section: str, key: str) -> Any:
    return (row.get(section) or {}).get(key)


def _cell(row: Mapping[str, Any], measure: tuple[str, str, str, str]) -> str:
    """`+0.0123 [+0.0050, +0.0200]`: the value and its interval where kept (forgetting: `forgetting_cell`)."""
    _, section, key, spec = measure
    values = row.get(section) or {}
    interval = values.get(f"{key}_ci95")
    text = (
        forgetting_cell(values.get(key), interval)
        if key == "general_loss_rise"
        else fmt(values.get(key), spec)
    )
    if isinstance(interval, list | tuple) and len(interval) == 2:
        text += f" [{fmt(interval[0], spec)}, {fmt(interval[1], spec)}]"
    return text
