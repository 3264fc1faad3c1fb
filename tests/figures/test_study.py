"""The study figures from hand-made study.json documents: which figures each study allows, and their content."""

from __future__ import annotations

from pathlib import Path

import pytest
from matplotlib.axes import Axes
from matplotlib.lines import Line2D

from deltarank.errors import InputError
from deltarank.figures.study import render_study_figures, study_figures
from tests.study.example_study import belle_study, biderman_study, run


def drawn_lines(ax: Axes) -> dict[str, Line2D]:
    """The axes' labelled lines by label (error-bar caps and other unlabelled lines left out)."""
    return {
        str(line.get_label()): line for line in ax.get_lines() if not str(line.get_label()).startswith("_")
    }


def test_biderman_figures(tmp_path: Path) -> None:
    figures = study_figures(biderman_study())
    # one data size and one duration: no lines over data size or duration
    assert set(figures) == {
        "study_score_vs_parameters",
        "study_score_vs_cost",
        "study_learning_forgetting",
        "study_diversity",
    }
    (ax,) = figures["study_learning_forgetting"].axes
    lines = drawn_lines(ax)
    assert {"full", "lora r=2", "full + weight_decay 0.0001", "base model"} <= set(
        lines
    )  # one model: unnamed
    # learning = base loss 2.0 − run loss; forgetting = general-text loss rise
    full_x, full_y = lines["full"].get_data()
    assert list(full_x) == [0.30, 0.31] and list(full_y) == pytest.approx([0.80, 0.78])
    (bars_ax,) = figures["study_diversity"].axes
    heights = [patch.get_height() for patch in bars_ax.patches]
    assert heights == [6.0, 2.0, 4.0]  # base, full, LoRA: distinct strings per prompt
    written = render_study_figures(biderman_study(), tmp_path, formats=("png",))
    assert sorted(p.name for p in written) == sorted(f"{stem}.png" for stem in figures)
    assert all(p.stat().st_size > 1000 for p in written)


def test_belle_figures(tmp_path: Path) -> None:
    figures = study_figures(belle_study())
    assert "study_score_vs_data_size" in figures and "study_diversity" not in figures
    (ax,) = figures["study_score_vs_data_size"].axes
    lines = drawn_lines(ax)
    assert set(lines) == {"tiny lora r=8", "tiny full", "big lora r=8", "chance (0.5)"}
    x, y = lines["tiny lora r=8"].get_data()
    assert list(x) == [100, 200, 400] and list(y) == pytest.approx([0.60, 0.62, 0.64])
    assert ax.get_ylabel() == "accuracy"
    written = render_study_figures(belle_study(), tmp_path, formats=("png", "pdf"))
    assert len(written) == 2 * len(figures)


def test_stacked_runs_stay_out_of_the_score_figures() -> None:
    """A run stacked on another learned a second task (no accuracy, another held-out set): the score figures
    keep the accuracy of the runs trained from the base and leave it out."""
    study = belle_study()
    stacked = run("zh-text-from-full", "lora", size=100, loss=3.2, lora_r=8)
    stacked.update({"from": "full-n400"})
    stacked["settings"]["data"] = "builtin:zh-text"
    study["runs"].append(stacked)
    figures = study_figures(study)
    for stem in ("study_score_vs_data_size", "study_score_vs_parameters", "study_score_vs_cost"):
        (ax,) = figures[stem].axes
        assert ax.get_ylabel() == "accuracy"
        assert set(drawn_lines(ax)) == {"tiny lora r=8", "tiny full", "big lora r=8", "chance (0.5)"}


def test_several_data_sets_are_named_in_the_labels() -> None:
    study = belle_study()
    for row in study["runs"]:
        if row["name"] == "big-lora-n100":
            row["settings"]["data"] = "builtin:math"
    (ax,) = study_figures(study)["study_score_vs_parameters"].axes
    labels = set(drawn_lines(ax))
    assert labels == {
        "tiny lora r=8 on builtin:zh-sentiment",
        "tiny full on builtin:zh-sentiment",
        "big lora r=8 on builtin:math",
    }


def test_not_a_study(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"deltarank\.study/1"):
        render_study_figures({"schema": "deltarank.reproduce/1"}, tmp_path)


def test_plot_command_redraws_a_study(tmp_path: Path) -> None:
    import json

    from click.testing import CliRunner

    from deltarank.cli import main

    study = tmp_path / "study.json"
    study.write_text(json.dumps(belle_study(), indent=1))
    out = tmp_path / "figures"
    result = CliRunner().invoke(main, ["plot", str(study), "-o", str(out), "--format", "png"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{stem}.png" for stem in study_figures(belle_study())
    )
    again = CliRunner().invoke(main, ["plot", str(study), "-o", str(out), "--format", "png"])
    assert again.exit_code != 0 and "already exists (use --force" in again.output
    forced = CliRunner().invoke(main, ["plot", str(study), "-o", str(out), "--format", "png", "--force"])
    assert forced.exit_code == 0, forced.output


def test_a_recommended_lora_run_is_labelled_by_its_source_not_by_one_rank() -> None:
    """A run trained with `recommend:` has per-module ranks: its legend names where they came from, not its
    most common rank (which would pass it off as a uniform LoRA of that rank)."""
    from deltarank.figures.study_rows import series_label

    uniform = {"settings": {"method": "lora", "lora_r": 16}}
    recommended = {
        "settings": {"method": "lora", "lora_r": 20},
        "recommendation": {"from": "full", "lora_r": 20},
    }
    assert series_label(uniform, with_model=False) == "lora r=16"
    assert series_label(recommended, with_model=False) == "lora ranks from full's ΔW"
