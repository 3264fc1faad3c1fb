"""Figure 4: median r₀.₉ across training, from checkpoint results."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from deltarank.errors import DeltarankError
from deltarank.figures.runs import make_runs
from deltarank.figures.training import can_plot_training, plot_rank_over_training, training_series
from tests.figures.synthetic import planted_result


def _checkpoints(root: str, values: dict[int, float]) -> list:  # type: ignore[type-arg]
    return [
        planted_result(f"{root}/checkpoint-{s}", {"q_proj": v, "o_proj": v / 2}) for s, v in values.items()
    ]


def test_series_grouped_by_run_and_sorted_by_step() -> None:
    results = _checkpoints("r/full", {40: 80, 20: 40}) + _checkpoints("r/lora", {20: 8, 40: 9})
    series = training_series(make_runs(results))
    assert list(series) == ["full", "lora"]
    assert [p.x for p in series["full"]] == [20, 40]
    assert not any(p.final for points in series.values() for p in points)


def test_final_model_takes_the_last_step_and_replaces_that_checkpoint() -> None:
    results = [
        *_checkpoints("r/full", {20: 40, 40: 80}),
        planted_result("r/full", {"q_proj": 99, "o_proj": 1}),
    ]
    (points,) = training_series(make_runs(results)).values()
    assert [(p.x, p.final) for p in points] == [(20, False), (40, True)]
    assert points[-1].run.result.tuned == "r/full"


def test_final_model_step_from_train_log(tmp_path: Path) -> None:
    run_dir = tmp_path / "full"
    run_dir.mkdir()
    log = [{"step": 20, "tokens": 100}, {"step": 50, "tokens": 250}]
    (run_dir / "train_log.jsonl").write_text("\n".join(json.dumps(x) for x in log))
    results = [*_checkpoints(str(run_dir), {20: 40}), planted_result(str(run_dir), {"q_proj": 99})]
    (points,) = training_series(make_runs(results), "tokens").values()
    assert [(p.x, p.final) for p in points] == [(100, False), (250, True)]


def test_training_errors() -> None:
    with pytest.raises(DeltarankError, match="cannot place"):
        training_series(make_runs([planted_result("r/full", {"q_proj": 1})]))
    with pytest.raises(DeltarankError, match="no token count"):
        training_series(make_runs(_checkpoints("r/full", {20: 1})), "tokens")
    with pytest.raises(DeltarankError, match="unknown x axis"):
        training_series([], "epoch")


def test_can_plot_training() -> None:
    assert can_plot_training(make_runs(_checkpoints("r/full", {20: 1, 40: 2})))
    assert not can_plot_training(make_runs(_checkpoints("r/full", {20: 1}) + _checkpoints("r/lora", {20: 1})))


def test_training_figure_lines() -> None:
    results = [*_checkpoints("r/full", {20: 40, 40: 80, 60: 160}), *_checkpoints("r/lora", {20: 8, 40: 9})]
    fig = plot_rank_over_training(results, lora_rank=16)
    assert [ax.get_title() for ax in fig.axes] == ["q_proj", "o_proj"]
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == {"full", "lora", "LoRA r = 16", "Gaussian r₀.₉"}
    assert list(lines["full"].get_xdata()) == [20, 40, 60]
    assert list(lines["full"].get_ydata()) == [40, 80, 160]
    assert list(fig.axes[1].get_lines()[0].get_ydata()) == [20, 40, 80]
    assert ax.get_xlabel() == "training step"
    assert ax.get_ylabel() == "median r₀.₉"
    assert ax.get_yscale() == "log"


def test_training_figure_marks_the_final_model() -> None:
    results = [
        *_checkpoints("r/full", {20: 40, 40: 80}),
        planted_result("r/full", {"q_proj": 99, "o_proj": 9}),
    ]
    fig = plot_rank_over_training(results, modules=["q_proj"])
    (ax,) = fig.axes
    final = [line for line in ax.get_lines() if line.get_label() == "_final"]
    assert len(final) == 1 and list(final[0].get_ydata()) == [99]
    assert "final model" in [t.get_text() for t in fig.legends[0].get_texts()]


def test_final_model_step_from_run_record(tmp_path: Path) -> None:
    run_dir = tmp_path / "lora"
    run_dir.mkdir()
    (run_dir / "run.json").write_text(json.dumps({"steps": 90}))
    results = [*_checkpoints(str(run_dir), {30: 4, 60: 5}), planted_result(str(run_dir), {"q_proj": 6})]
    (points,) = training_series(make_runs(results)).values()
    assert [(p.x, p.final) for p in points] == [(30, False), (60, False), (90, True)]


def test_training_figure_band_is_the_layers_interquartile_range() -> None:
    """Each line sits in a band from the first to the third quartile of r₀.₉ over the layers; the grey line is
    the Gaussian r₀.₉ of the module's shape (the median of the stored `random_energy_90`)."""
    from dataclasses import replace

    from deltarank.analysis.results import SpectrumResult
    from deltarank.figures.style import GAUSSIAN_LABEL
    from deltarank.figures.training import BAND_LABEL
    from tests.figures.synthetic import matrix

    def layered(tuned: str, scale: float) -> SpectrumResult:
        # four layers with r₀.₉ 10, 20, 30, 40 (× scale): quartiles (inclusive) 17.5, 25, 32.5 (× scale)
        mats = tuple(
            replace(
                matrix("q_proj", layer, np.ones(256), (256, 256)),
                ranks={"energy_90": scale * 10 * (layer + 1), "noise_floor": 1.0},
                random_energy_90=180 + layer,  # median 181.5
            )
            for layer in range(4)
        )
        return SpectrumResult(
            base="base", tuned=tuned, device="cpu", precision="float32", thresholds=(0.9,), matrices=mats
        )

    fig = plot_rank_over_training(
        [layered("r/full/checkpoint-20", 1.0), layered("r/full/checkpoint-40", 2.0)]
    )
    (ax,) = fig.axes[:1]
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert list(lines["full"].get_ydata()) == [25, 50]
    assert list(lines[GAUSSIAN_LABEL].get_ydata()) == [181.5, 181.5]
    (band,) = [c for c in ax.collections if c.get_label() != BAND_LABEL and len(c.get_paths()) == 1]
    ys = sorted({round(float(y), 6) for y in band.get_paths()[0].vertices[:, 1]})
    assert ys == [17.5, 32.5, 35.0, 65.0]  # (q1, q3) at step 20 and at step 40
    assert BAND_LABEL in [t.get_text() for t in fig.legends[0].get_texts()]
