"""Figures of the subspace analyses, drawn from planted result records (no model, no SVD)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure

from deltarank.figures.save import save_figure
from deltarank.figures.subspace import plot_intruders_by_layer, plot_retained_energy, plot_similarity_heatmaps
from tests.figures.synthetic import extract_result, intruder_result, similarity_result


def test_similarity_heatmaps() -> None:
    fig = plot_similarity_heatmaps(similarity_result())
    assert isinstance(fig, Figure)
    panels = [ax for ax in fig.axes if ax.images]
    assert [ax.get_title() for ax in panels] == ["q", "down", "up"]
    q_grid = panels[0].images[0].get_array()
    assert np.asarray(q_grid) == pytest.approx(np.full((3, 3), 0.2))  # mean of 0.1, 0.2, 0.3 over layers
    assert np.asarray(panels[2].images[0].get_array()).shape == (3, 2)  # clipped to the sizes all layers hold
    assert panels[0].images[0].get_clim() == (0.0, 1.0)
    assert any(ax.get_ylabel() == "φ(i, j)" for ax in fig.axes)  # the colour bar


def test_intruders_by_layer_full_vs_lora() -> None:
    fig = plot_intruders_by_layer(
        [intruder_result("full", 0.3), intruder_result("lora", 0.3)], ["full", "LoRA"]
    )
    panel = next(ax for ax in fig.axes if ax.get_title() == "q")
    full, lora = panel.get_lines()
    assert list(full.get_ydata()) == [0, 1, 2] and list(lora.get_ydata()) == [1, 2, 3]
    assert list(full.get_xdata()) == [0, 1, 2]
    swept = plot_intruders_by_layer([intruder_result("lora", 0.3)], epsilon=0.2)
    line = next(ax for ax in swept.axes if ax.get_title() == "q").get_lines()[0]
    assert list(line.get_ydata()) == [0, 0, 0]  # |cos| 0.3 is no intruder at ε = 0.2


def test_retained_energy() -> None:
    result = extract_result()
    fig = plot_retained_energy(result)
    (ax,) = fig.axes
    curve = ax.get_lines()[0]
    assert curve.get_xdata()[0] == 1 and curve.get_ydata()[-1] == pytest.approx(1.0)
    assert curve.get_ydata()[1] == pytest.approx(result.matrices[0].retained_energy)
    assert any(line.get_ydata()[0] == 0.9 for line in ax.get_lines())  # τ line


def test_figures_save(tmp_path: Path) -> None:
    figures = {
        "similarity": plot_similarity_heatmaps(similarity_result()),
        "intruders": plot_intruders_by_layer([intruder_result("full", 0.3)]),
        "energy": plot_retained_energy(extract_result()),
    }
    for stem, fig in figures.items():
        (path,) = save_figure(fig, tmp_path, stem, ["png"])
        assert path.stat().st_size > 10_000
