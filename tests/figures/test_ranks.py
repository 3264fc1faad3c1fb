"""Figure 2: r₀.₉ against layer, one panel per module type."""

from __future__ import annotations

import numpy as np
import pytest

from deltarank.figures.ranks import layer_ranks, plot_ranks_by_layer
from deltarank.figures.runs import make_runs
from deltarank.figures.style import GAUSSIAN_LABEL
from tests.figures.synthetic import SHAPES, full_result, lora_result


def test_layer_ranks_sorted_by_layer() -> None:
    (run,) = make_runs([full_result(layers=5)])
    layers, values = layer_ranks(run, "q_proj")
    assert layers.tolist() == [0, 1, 2, 3, 4]
    expected = [m.ranks["energy_90"] for m in run.result.matrices if m.module == "q_proj"]
    assert values.tolist() == expected


def test_ranks_panels_one_line_per_run_plus_references() -> None:
    full, lora = full_result(layers=6), lora_result(rank=4, layers=6)
    fig = plot_ranks_by_layer([full, lora])
    assert len(fig.axes) == len(SHAPES)  # 1 × 3 grid, legend below
    for ax, module in zip(fig.axes, SHAPES, strict=True):
        assert ax.get_title() == module
        assert ax.get_xlabel() == "layer"
        assert ax.get_yscale() == "log"
        labels = [line.get_label() for line in ax.get_lines()]
        assert labels == ["full", "lora", GAUSSIAN_LABEL, "LoRA r = 4"]
        lines = dict(zip(labels, ax.get_lines(), strict=True))
        assert len(lines["full"].get_xdata()) == 6
        assert lines["LoRA r = 4"].get_ydata()[0] == 4
        gauss = np.median([m.random_energy_90 for m in full.matrices if m.module == module])
        assert lines[GAUSSIAN_LABEL].get_ydata()[0] == pytest.approx(gauss)
    assert fig.axes[0].get_ylabel() == "r₀.₉"
    assert fig.axes[1].get_ylabel() == ""


def test_ranks_lora_rank_option_and_other_key() -> None:
    fig = plot_ranks_by_layer(full_result(), lora_rank=16, modules=["k_proj"], key="noise_floor")
    (ax,) = fig.axes
    assert [line.get_label() for line in ax.get_lines()] == ["full", GAUSSIAN_LABEL, "LoRA r = 16"]
    assert ax.get_ylabel() == "noise_floor"
    assert fig.get_size_inches()[0] == pytest.approx(3.3)


def test_ranks_without_lora_rank_draws_no_r_line() -> None:
    fig = plot_ranks_by_layer(full_result(), modules=["q_proj"])
    assert [line.get_label() for line in fig.axes[0].get_lines()] == ["full", GAUSSIAN_LABEL]
