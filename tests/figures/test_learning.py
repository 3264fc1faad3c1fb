"""Figure 5: learning against forgetting from the reproduction summary, with the Pareto front."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deltarank.errors import InputError
from deltarank.figures.learning import load_summary, pareto_front, plot_learning_forgetting, tradeoff_points
from tests.figures.synthetic import summary_dict, write_summary


def test_pareto_front_known_answer() -> None:
    # (forgetting, learning): 0 and 1 and 3 are on the front; 2 is beaten by 1; 4 ties 3 but forgets more.
    forgetting = [0.0, 0.1, 0.2, 0.3, 0.4]
    learning = [0.0, 0.5, 0.4, 0.9, 0.9]
    assert pareto_front(learning, forgetting) == [0, 1, 3]
    assert pareto_front([], []) == []


def test_tradeoff_points_from_losses() -> None:
    points = tradeoff_points(summary_dict())
    first = points[0]
    assert (first.run, first.step) == ("full", 20)
    assert first.learning == pytest.approx(2.0 - 1.6)
    assert first.forgetting == pytest.approx(3.10 - 3.0)
    finals = tradeoff_points(summary_dict(points=False))
    assert [(p.run, round(p.learning, 6), p.forgetting) for p in finals] == [
        ("full", 0.9, 0.4),
        ("lora", 0.35, 0.2),
    ]


def test_learning_figure_content(tmp_path: Path) -> None:
    fig = plot_learning_forgetting(write_summary(tmp_path / "summary.json"))
    (ax,) = fig.axes
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert {"full fine-tuning", "LoRA", "base model", "Pareto front"} <= set(lines)
    assert lines["full fine-tuning"].get_marker() == "o" and lines["LoRA"].get_marker() == "s"
    assert len(lines["full fine-tuning"].get_xdata()) == 3 and len(lines["LoRA"].get_xdata()) == 3
    front = lines["Pareto front"]
    # base, lora@20, lora@40, full@20, full@40, full@60; lora@60 (learns 0.35, forgets 0.2) is dominated.
    assert list(front.get_xdata()) == pytest.approx([0.0, 0.02, 0.05, 0.10, 0.25, 0.40])
    assert ax.get_xlabel() == "forgetting: KL(base‖tuned), nats/token"
    assert ax.get_ylabel() == "learning (drop in code loss)"
    assert fig.get_size_inches()[0] == pytest.approx(3.3)


def test_load_summary_errors(tmp_path: Path) -> None:
    bad = tmp_path / "s.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match="not a JSON summary"):
        load_summary(bad)
    bad.write_text(json.dumps({"schema": "other"}))
    with pytest.raises(InputError, match=r"deltarank\.reproduce/1"):
        load_summary(bad)
    with pytest.raises(InputError, match="cannot read"):
        load_summary(tmp_path / "missing.json")
    broken = summary_dict()
    del broken["base"]
    with pytest.raises(InputError, match="missing or malformed"):
        tradeoff_points(broken)
