"""Figure 5: learning against forgetting from the reproduction summary, with the Pareto front."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from matplotlib.axes import Axes

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


def _bars(ax: Axes, gid: str) -> list[tuple[float, float, float]]:
    """(centre on the other axis, low, high) of every error bar in the collections with this gid."""
    across = gid.startswith("interval-x:")
    found = []
    for collection in ax.collections:
        if collection.get_gid() == gid:
            for (x0, y0), (x1, y1) in collection.get_segments():  # type: ignore[attr-defined]
                found.append((y0, min(x0, x1), max(x0, x1)) if across else (x0, min(y0, y1), max(y0, y1)))
    return found


def test_final_models_carry_the_summarys_intervals() -> None:
    """summary.json's intervals (the paired bootstrap of each run's held-out loss change and general-text
    loss rise) are drawn on the final models only: learning = −change, so its bar is the change's negated."""
    summary = summary_dict()
    summary["intervals"] = {
        "held_out_loss_change": {"full": [-0.95, -0.85], "lora": [-0.39, -0.31]},
        "forgetting": {"full": [0.36, 0.44], "lora": None},  # lora's not recorded: no bar across
    }
    finals = {p.run: p for p in tradeoff_points(summary) if p.step == 60}
    assert finals["full"].learning_ci95 == pytest.approx((0.85, 0.95))
    assert finals["full"].forgetting_ci95 == pytest.approx((0.36, 0.44))
    assert all(p.learning_ci95 is None for p in tradeoff_points(summary) if p.step != 60)
    fig = plot_learning_forgetting(summary)
    (ax,) = fig.axes
    assert _bars(ax, "interval-y:full") == [pytest.approx((0.40, 0.85, 0.95))]  # at forgetting 0.40
    assert _bars(ax, "interval-x:full") == [pytest.approx((0.90, 0.36, 0.44))]  # at learning 0.90
    assert _bars(ax, "interval-y:lora") == [pytest.approx((0.20, 0.31, 0.39))]
    assert _bars(ax, "interval-x:lora") == []
    (legend,) = fig.legends
    assert legend.get_title().get_text() == "bars: 95% CI of the final models, evaluation noise"
    assert {t.get_text() for t in legend.get_texts()} == {
        "full fine-tuning",
        "LoRA",
        "base model",
        "Pareto front",
    }
    fig.draw_without_rendering()
    assert legend.get_window_extent().height < 0.35 * fig.get_figheight() * fig.dpi


def test_summary_without_intervals_has_no_bars() -> None:
    fig = plot_learning_forgetting(summary_dict())
    assert not [c for c in fig.axes[0].collections if str(c.get_gid()).startswith("interval")]
    assert fig.legends[0].get_title().get_text() == ""
