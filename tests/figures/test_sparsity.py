"""The sparse-vs-low-rank figure: one point per module type and run at (share changed beyond atol, rank ÷ min
dimension), medians over layers with interquartile whiskers; reachable as `plot --kind sparsity`."""

from __future__ import annotations

from pathlib import Path

import pytest

from deltarank.analysis.results import MatrixSpectrum, SparsityProfile
from deltarank.errors import DeltarankError
from deltarank.figures.render import render_figures
from deltarank.figures.runs import make_runs
from deltarank.figures.sparsity import plot_sparsity, sparsity_points
from tests.figures.synthetic import SHAPES, full_result, lora_result, with_sparsity


def _sparse(m: MatrixSpectrum) -> SparsityProfile:
    """An RL-like update: 80–90% of entries kept (more in later layers), nearly full rank."""
    kept = 0.8 + 0.05 * (m.layer or 0)
    return SparsityProfile(kept, kept, kept, 0.9)


def _lora(m: MatrixSpectrum) -> SparsityProfile:
    return SparsityProfile(0.0, 0.0, None, 4 / min(m.shape))


def test_points_are_medians_and_quartiles_over_layers() -> None:
    (run,) = make_runs([with_sparsity(full_result(layers=3), _sparse)])
    points = sparsity_points(run)
    assert list(points) == list(SHAPES)
    changed, rank = points["q_proj"]  # kept 0.8, 0.85, 0.9 -> changed 0.2, 0.15, 0.1
    assert changed == pytest.approx((0.125, 0.15, 0.175))
    assert rank == (0.9, 0.9, 0.9)


def test_one_marker_per_module_type_and_run() -> None:
    rl = with_sparsity(full_result("runs/rl", layers=3), _sparse)
    lora = with_sparsity(lora_result("runs/lora", rank=4, layers=3), _lora)
    fig = plot_sparsity([rl, lora, full_result("runs/old")])  # a file without a profile is left out
    (ax, *_) = fig.axes
    centres = sorted(
        (round(float(line.get_xdata()[0]), 6), round(float(line.get_ydata()[0]), 6))
        for line in ax.get_lines()
        if line.get_marker() not in ("None", "", None) and len(line.get_xdata()) == 1
    )
    expected = sorted([(0.15, 0.9)] * len(SHAPES) + [(1.0, 4 / min(shape)) for shape in SHAPES.values()])
    assert centres == [(round(x, 6), round(y, 6)) for x, y in expected]
    assert ax.get_xlim() == ax.get_ylim() == pytest.approx((-0.04, 1.04))
    assert "1e-05" in ax.get_xlabel() and "rank ÷ min(m, n)" in ax.get_ylabel()
    legends = [text.get_text() for legend in fig.legends for text in legend.get_texts()]
    assert legends == ["rl", "lora", *SHAPES]


def test_plot_kind_sparsity_needs_a_profile(tmp_path: Path) -> None:
    profiled = with_sparsity(full_result("runs/rl", layers=2), _sparse)
    written = render_figures([profiled], tmp_path, kinds="sparsity", formats="png")
    assert [p.name for p in written] == ["sparsity.png"]
    with pytest.raises(DeltarankError, match="sparsity profile"):
        render_figures([full_result()], tmp_path / "old", kinds="sparsity", formats="png")
    everything = render_figures([full_result()], tmp_path / "all", formats="png")  # `all` skips it quietly
    assert "sparsity.png" not in [p.name for p in everything]


def test_runs_that_share_a_colour_differ_in_fill() -> None:
    """With more runs than palette colours, run i and run i + len(PALETTE) share a colour: one is filled, the
    other hollow (the methods benchmark draws 12 runs on 8 colours)."""
    from deltarank.figures.sparsity import _face
    from deltarank.figures.style import PALETTE

    faces = [_face(i) for i in range(2 * len(PALETTE))]
    assert faces[:4] == [PALETTE[0], "none", PALETTE[2], "none"]  # the alternation of a few runs is kept
    for i in range(len(PALETTE)):
        assert (faces[i] == "none") != (faces[i + len(PALETTE)] == "none")
