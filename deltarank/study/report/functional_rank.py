"""report.md's functional-rank table: per run, the share of its learning and of its drift that the top k
directions of every ΔW keep (study.json rows' `functional_rank`, `deltarank.study.measure.functional_rank`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from deltarank.study.report.cells import fmt

INTRO = (
    "Share of each run's learning (held-out loss drop, base → tuned) and of its drift (rise of the forgetting "
    "measure) that the model keeps when every ΔW is cut to its top k singular directions (k = 0: no block ΔW, "
    "the run's other changed parameters kept), with the 95% paired-bootstrap interval over the evaluation "
    "sequences (evaluation noise; training noise not included). k₉₀ func: the smallest k keeping 90% of the "
    "learning, beside the median energy rank r₀.₉ (ΔW energy_90); ≤ k: the smallest k whose interval lies "
    "above 90%."
)


def k90_cell(run: Mapping[str, Any]) -> str:
    """A run's k₉₀^func for the runs table ('' without a functional-rank section, '–' when no k reaches it)."""
    section = run.get("functional_rank") or {}
    if "k90" not in section:
        return ""
    return "–" if section["k90"] is None else str(section["k90"])


def functional_rank_table(
    runs: Sequence[Mapping[str, Any]],
) -> tuple[list[str], list[str], list[list[str]]] | None:
    """The table's notes, header and rows (one row per k, two columns per run: learning and drift share);
    None when no run has the section."""
    measured = [r for r in runs if "ks" in (r.get("functional_rank") or {})]
    if not measured:
        return None
    ks = sorted({k for r in measured for k in r["functional_rank"]["ks"]})
    header = ["k"]
    for run in measured:
        header += [f"{run.get('name')} learning", f"{run.get('name')} drift"]
    rows = []
    for k in ks:
        cells = [str(k)]
        for run in measured:
            section = run["functional_rank"]
            cells += [_share_cell(section, name, k) for name in ("learning", "drift")]
        rows.append(cells)
    notes = [
        f"- {r.get('name')}: k₉₀ func {k90_cell(r)} (≤ {fmt(r['functional_rank'].get('k90_upper'), 'd')}), "
        f"{r['functional_rank'].get('matrices')} matrices"
        for r in measured
    ]
    notes += [
        f"- {r.get('name')}: {r['functional_rank']['note']}"
        for r in runs
        if "note" in (r.get("functional_rank") or {})
    ]
    return [INTRO, "", *notes], header, rows


def _share_cell(section: Mapping[str, Any], name: str, k: int) -> str:
    """One share with its interval, e.g. `93.7% (91.2–95.9)`; '' where the run's grid has no such k."""
    measure = section.get(name) or {}
    if k not in section["ks"] or not measure:
        return ""
    index = section["ks"].index(k)
    share, interval = measure["share"][index], measure["share_ci95"][index]
    if share is None:
        return "–"
    text = fmt(share, ".1%")
    if interval is None:
        return text
    return f"{text} ({interval[0] * 100:.1f}–{interval[1] * 100:.1f})"
