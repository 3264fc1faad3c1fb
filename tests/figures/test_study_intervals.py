"""The study figures' 95% intervals, chance line and compact legend, checked against numbers worked out here:
the paired bootstrap of the evaluation sequences (`deltarank.evaluation.paired`), the binomial of an
accuracy, Student's t over the seeds (`deltarank.study.claims.statistics`), the chance level of a two-answer
set."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pytest
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from deltarank.evaluation.paired import paired_difference
from deltarank.figures import study_rows as rows
from deltarank.figures.panels import _renderer
from deltarank.figures.study import study_figures
from deltarank.study.claims.statistics import group_runs, mean_interval
from tests.figures.study_documents import ACCURACY_EXAMPLES, BASE_ACCURACY, SERIES, study_with_intervals
from tests.study.example_study import belle_study, biderman_study

Z95 = 1.959963984540054


def bars(ax: Axes, gid: str) -> list[tuple[float, float]]:
    """The (low, high) ends of every error bar in the collections with this gid: y ends of an upright bar
    (`interval:`, `interval-y:`), x ends of one across (`interval-x:`)."""
    across = gid.startswith("interval-x:")
    ends = []
    for collection in ax.collections:
        if collection.get_gid() == gid:
            for segment in collection.get_segments():  # type: ignore[attr-defined]
                (x0, y0), (x1, y1) = segment
                ends.append(
                    (float(min(x0, x1)), float(max(x0, x1))) if across else (min(y0, y1), max(y0, y1))
                )
    return ends


def by_name(study: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {str(r["name"]): r for r in study["runs"]}


def shares(fig: Figure) -> tuple[float, float]:
    """(legend height, axes height) as shares of the figure's height, after layout."""
    renderer = _renderer(fig)
    fig.draw_without_rendering()
    height = fig.get_figheight() * fig.dpi
    legend = fig.legends[0].get_window_extent(renderer).height
    return legend / height, fig.axes[0].get_window_extent(renderer).height / height


def test_plane_bars_are_each_runs_paired_bootstrap() -> None:
    """Each run's bars on the plane are the paired bootstrap of its sequences against the base's: learning (the
    drop of the held-out loss) up and down, forgetting (the general-text loss rise) across."""
    study = study_with_intervals()
    (ax,) = study_figures(study)["study_learning_forgetting"].axes
    base = study["base"]["per_sequence"]
    for name, label in (("lora4-n200-s0", "lora r=4"), ("full-n200-s0", "full")):
        mine = by_name(study)[name]["per_sequence"]
        held = paired_difference(mine["held_out"], base["held_out"])
        general = paired_difference(mine["general"], base["general"])
        assert held is not None and general is not None
        (learning,) = bars(ax, f"interval-y:{label}")
        assert learning == pytest.approx((-held["ci95_high"], -held["ci95_low"]))
        (forgetting,) = bars(ax, f"interval-x:{label}")
        assert forgetting == pytest.approx((general["ci95_low"], general["ci95_high"]))
        assert forgetting[0] < general["estimate"] < forgetting[1]
    assert (
        ax.figure.legends[0].get_title().get_text() == "lines: Pareto fronts; bars: 95% CI, evaluation noise"
    )


def test_plane_legend_of_nine_runs_leaves_the_axes_most_of_the_figure() -> None:
    fig = study_figures(study_with_intervals())["study_learning_forgetting"]
    (legend,) = fig.legends
    assert len(legend.get_texts()) == len(SERIES) + 1  # nine series and the base model, each once
    legend_share, axes_share = shares(fig)
    assert legend_share < 0.35 and axes_share >= 0.65
    assert fig.get_figwidth() == pytest.approx(3.3)  # single column still


def test_accuracy_bars_are_binomial_and_the_chance_line_is_at_one_half() -> None:
    study = study_with_intervals(accuracy=True)
    figures = study_figures(study)
    (ax,) = figures["study_score_vs_parameters"].axes
    p = float(by_name(study)["lora4-n200-s0"]["learning"]["accuracy"])
    half = Z95 * math.sqrt(p * (1 - p) / ACCURACY_EXAMPLES)  # one run at 4000 parameters
    assert bars(ax, "interval:lora r=4") == [pytest.approx((p - half, p + half))]
    (chance,) = [line for line in ax.get_lines() if line.get_gid() == "chance"]
    assert list(chance.get_ydata()) == [0.5, 0.5] and chance.get_linestyle() == "--"
    legend = figures["study_score_vs_parameters"].legends[0]
    assert "chance (0.5)" in [t.get_text() for t in legend.get_texts()]
    assert legend.get_title().get_text() == "bars: 95% CI, evaluation noise only"
    # on the plane: the gain over the base, its half-width the run's and the base's binomials in quadrature
    (plane,) = figures["study_learning_forgetting"].axes
    gain = p - BASE_ACCURACY
    both = math.hypot(half, Z95 * math.sqrt(BASE_ACCURACY * (1 - BASE_ACCURACY) / ACCURACY_EXAMPLES))
    assert bars(plane, "interval-y:lora r=4") == [pytest.approx((gain - both, gain + both))]
    for fig in figures.values():
        assert shares(fig)[0] < 0.35


def test_seed_points_add_the_seed_t_interval_to_the_evaluation_noise() -> None:
    """Three seeds at a point: the seeds' t interval (as the report's groups keep it) and the evaluation noise
    of the mean (the runs' paired half-widths, averaged: they share the sequences) in quadrature."""
    study = study_with_intervals(SERIES[:3], sizes=(100, 200, 400), seeds=(0, 1, 2))
    fig = study_figures(study)["study_score_vs_data_size"]
    (ax,) = fig.axes
    members = [by_name(study)[f"lora2-n200-s{seed}"] for seed in range(3)]
    losses = [float(r["learning"]["held_out_loss"]) for r in members]
    seed = mean_interval(losses)["ci95_half_width"]
    evaluation = 0.0
    for run in members:
        found = paired_difference(run["per_sequence"]["held_out"], study["base"]["per_sequence"]["held_out"])
        assert found is not None
        evaluation += (found["ci95_high"] - found["ci95_low"]) / 2 / 3
    mean, half = sum(losses) / 3, math.hypot(seed, evaluation)
    assert bars(ax, "interval:lora r=2")[1] == pytest.approx((mean - half, mean + half))
    assert fig.legends[0].get_title().get_text() == "bars: 95% CI, seeds + evaluation noise"
    assert not [line for line in ax.get_lines() if line.get_gid() == "chance"]  # a loss has no chance level


def test_points_averaging_several_settings_hold_evaluation_noise_only() -> None:
    """Two learning rates at one point are not seeds of one setting: their spread is no seed noise."""
    study = study_with_intervals(SERIES[:1], sizes=(100, 200), seeds=(0, 1))
    for row in study["runs"]:
        row["coordinates"]["lr"] = row["settings"]["lr"] = 1e-5 * (1 + row["settings"]["seed"])
    study["groups"] = group_runs(study["runs"])
    fig = study_figures(study)["study_score_vs_data_size"]
    members = [by_name(study)[f"full-n200-s{s}"] for s in (0, 1)]
    mean = sum(float(r["learning"]["held_out_loss"]) for r in members) / 2
    half = sum((r["learning"]["held_out_loss_change_ci95"][1] - r["learning"]["held_out_loss_change_ci95"][0]) / 4
               for r in members)  # fmt: skip
    assert bars(fig.axes[0], "interval:full")[1] == pytest.approx((mean - half, mean + half))
    assert fig.legends[0].get_title().get_text() == "bars: 95% CI, evaluation noise only"


def test_rows_without_intervals_get_seed_bars_only() -> None:
    """Hand-made rows keep no `_ci95` (the runner writes them) and no accuracy: the plane (one run per point)
    has no bar, and a score point has the seeds' t interval alone where it is one group of seeds (full: two),
    none where it is one run (the weight-decay control); nothing invented."""
    study = biderman_study()
    figures = study_figures(study)
    (plane,) = figures["study_learning_forgetting"].axes
    assert not [c for c in plane.collections if str(c.get_gid()).startswith("interval")]
    assert figures["study_learning_forgetting"].legends[0].get_title().get_text() == "lines: Pareto fronts"
    (ax,) = figures["study_score_vs_parameters"].axes
    losses = [float(by_name(study)[n]["learning"]["held_out_loss"]) for n in ("full-s0", "full-s1")]
    found = mean_interval(losses)
    assert bars(ax, "interval:full") == [pytest.approx((found["ci95_low"], found["ci95_high"]))]
    assert bars(ax, "interval:full + weight_decay 0.0001") == []
    assert (
        figures["study_score_vs_parameters"].legends[0].get_title().get_text() == "bars: 95% CI, seeds only"
    )


def test_chance_level_of_the_accuracy_sets() -> None:
    sentiment = {"learning": {"accuracy_set": "builtin:zh-sentiment:test"}}
    math_run = {"learning": {"accuracy_set": "builtin:math:test"}}
    assert rows.accuracy_set(sentiment) == "zh-sentiment"
    assert rows.chance_accuracy([sentiment, sentiment]) == 0.5
    assert rows.chance_accuracy([math_run]) is None  # open numeric answers: no chance level
    assert rows.chance_accuracy([sentiment, math_run]) is None
    assert rows.accuracy_set({"settings": {"data": "builtin:zh-sentiment"}}) == "zh-sentiment"  # by its data


def test_no_bar_chart_on_a_log_axis() -> None:
    """A bar's length is read from 0: every bar chart the study figures draw is on a linear axis from 0."""
    checked = 0
    for study in (biderman_study(), belle_study(), study_with_intervals(accuracy=True)):
        for fig in study_figures(study).values():
            for ax in fig.axes:
                if any(isinstance(p, Rectangle) and p.get_height() > 0 for p in ax.patches):
                    assert ax.get_yscale() == "linear" and ax.get_ylim()[0] <= 0
                    checked += 1
    assert checked == 1  # the diversity bars


def test_diversity_bars_are_the_t_interval_over_prompts() -> None:
    """Distinct outputs per prompt carry `count_diversity`'s t interval over prompts; a series of two runs on
    the same prompts gets their mean half-width about their mean (correlated errors); a series without
    intervals gets no bar."""
    study = biderman_study()
    bases = rows.bases(study)
    next(iter(bases.values()))["diversity"]["distinct_per_prompt_ci95"] = [5.0, 7.0]  # base 6 ± 1
    named = by_name(study)
    named["full-s0"]["diversity"]["distinct_per_prompt_ci95"] = [1.5, 2.5]  # 2 ± 0.5
    named["full-s1"]["diversity"]["distinct_per_prompt_ci95"] = [1.0, 3.0]  # 2 ± 1.0
    (ax,) = study_figures(study)["study_diversity"].axes
    # base 6 ± 1; full 2 ± (0.5 + 1.0)/2; LoRA's runs have no interval: no bar
    assert sorted(bars(ax, "interval-y:diversity")) == [
        pytest.approx((1.25, 2.75)),
        pytest.approx((5.0, 7.0)),
    ]


def test_an_interval_that_misses_its_point_is_drawn_whole_not_refused() -> None:
    """A percentile-bootstrap interval of a change of ~1e-6 can miss its own point estimate; matplotlib refuses
    negative error lengths, so the bar runs from the point to the far end: (1.0, [1.2, 1.5]) spans 1.0 … 1.5."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from deltarank.figures.panels import interval_bars

    ax = Figure().add_subplot()
    interval_bars(ax, [0.0, 1.0], [1.0, 2.0], [(1.2, 1.5), (1.5, 2.5)], "y", "black", "bars")
    segments = next(c for c in ax.collections if c.get_gid() == "bars").get_segments()
    assert [(float(s[0][1]), float(s[1][1])) for s in segments] == [(1.0, 1.5), (1.5, 2.5)]
