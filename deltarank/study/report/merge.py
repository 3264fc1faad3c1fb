"""report.md's "Merge geometry" section: per group of runs against one base, the per-module means of
`deltarank similarity --merge` (study.json `subspace.merge`: `deltarank.study.measure.merge`) and its heatmaps."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from deltarank.study.report.cells import fmt

INTRO = (
    "Per module type, medians over layers of `deltarank similarity BASE RUN … --merge` (its defaults): overlap φ(k, k) = ‖U_aᵀ U_b‖²_F / k of the runs' top-k singular "
    "vectors and the share of opposite signs among the entries two trimmed deltas keep, each the mean over the "
    "pairs of runs (two random k-dimensional subspaces of R^d overlap about k/d; independent signs conflict "
    "half the time); n-way: among entries kept by two or more runs, the share whose signs are not all one; "
    "DARE p: the mean over runs of ‖DARE(ΔW) − ΔW‖_F / ‖ΔW‖_F with entries dropped at rate p (its expected "
    "square is p/(1 − p)), sum p: that of the merged sum."
)

SETTINGS = "k = {k:g}, TIES trim at density {density:g}, DARE seed {seed}"


def merge_tables(
    merge: Mapping[str, Any],
) -> list[tuple[str, list[str], list[list[str]], str]]:
    """(caption, header, rows, figure stem) per group of study.json's `subspace.merge`."""
    tables = []
    for group in merge.get("groups") or []:
        drops = [f"{float(p):g}" for p in group.get("dare_drops") or []]
        header = ["module", "matrices", "k", "overlap", "sign conflict", "n-way"]
        header += [h for p in drops for h in (f"DARE {p}", f"sum {p}")]
        rows = []
        for module, m in (group.get("modules") or {}).items():
            cells = [module, str(m.get("matrices")), fmt(m.get("k"), "g"), fmt(m.get("overlap"), ".3f")]
            cells += [fmt(m.get("sign_conflict"), ".3f"), fmt(m.get("sign_conflict_nway"), ".3f")]
            for p in drops:
                cells.append(fmt((m.get("dare_error") or {}).get(p), ".3f"))
                cells.append(fmt((m.get("dare_merged_error") or {}).get(p), ".3f"))
            rows.append(cells)
        caption = f"{', '.join(group['runs'])} ({group['file']}; " + SETTINGS.format(**group) + "):"
        tables.append((caption, header, rows, str(group["figure"])))
    return tables


def merge_notes(merge: Mapping[str, Any]) -> list[str]:
    """The runs left out of the merge geometry, and why."""
    notes = [f"- {', '.join(s['runs'])}: {s['reason']}." for s in merge.get("skipped") or []]
    return ([f"- {merge['note']}."] if merge.get("note") else []) + notes
