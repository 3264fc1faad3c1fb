"""report.md's functional rank: k₉₀ func beside the energy rank in the runs table, and the shares per k."""

from __future__ import annotations

from typing import Any

from deltarank.study.report.markdown import render_report

SECTION = {
    "matrices": 210,
    "ks": [0, 1, 2],
    "target": 0.9,
    "learning": {
        "base": 2.6,
        "tuned": 2.0,
        "values": [2.6, 2.1, 2.0],
        "share": [0.0, 0.834, 1.0],
        "share_ci95": [[0.0, 0.0], [0.8, 0.87], [1.0, 1.0]],
    },
    "drift": {
        "base": 1.0,
        "tuned": 1.1,
        "values": [1.0, 1.05, 1.1],
        "share": [0.0, 0.5, 1.0],
        "share_ci95": [None] * 3,
    },
    "k90": 2,
    "k90_upper": 2,
}


def study(*rows: dict[str, Any]) -> dict[str, Any]:
    return {"study": {"name": "s"}, "base": {"learning": {"held_out_loss": 2.6}}, "runs": list(rows)}


def test_the_report_shows_k90_and_the_shares() -> None:
    full = {"name": "full", "ranks": {"q_proj": {"energy_90_median": 100}}, "functional_rank": SECTION}
    prompt = {"name": "prompt", "ranks": {}}
    report = render_report(study(full, prompt))
    header = next(line for line in report.splitlines() if line.startswith("| run |"))
    assert header.endswith("| ΔW energy_90 | k₉₀ func |")
    assert "| full |" in report and "| 100 | 2 |" in report
    assert "## Functional rank" in report
    assert "| k | full learning | full drift |" in report
    assert "| 1 | 83.4% (80.0–87.0) | 50.0% |" in report
    assert "- full: k₉₀ func 2 (≤ 2), 210 matrices" in report


def test_no_section_no_table() -> None:
    report = render_report(study({"name": "full", "ranks": {}}))
    assert "Functional rank" not in report and "k₉₀ func" not in report
