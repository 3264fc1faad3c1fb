"""Figure 3, the headline: full fine-tuning's r₀.₉ (median, interquartile whiskers) per module type beside the
LoRA rank, the width, the Gaussian r₀.₉ and the paper's width-aware band (3.9–39% of the width)."""

from __future__ import annotations

import pytest
from matplotlib.collections import LineCollection
from matplotlib.patches import Rectangle

from deltarank.analysis.results.rank_claim import WIDTH_RANGE
from deltarank.errors import DeltarankError
from deltarank.figures.headline import BAND_GID, RATIO_GID, WIDTH_GID, plot_headline
from tests.figures.synthetic import SHAPES, full_result, lora_result, planted_result


def _ratios(ax) -> list[str]:  # type: ignore[no-untyped-def]
    return [t.get_text() for t in ax.texts if t.get_gid() == RATIO_GID]


def _bands(ax) -> list[Rectangle]:  # type: ignore[no-untyped-def]
    return [p for p in ax.patches if isinstance(p, Rectangle) and p.get_gid() == BAND_GID]


def test_headline_labels_each_module_with_its_multiple_of_r_and_share_of_the_width() -> None:
    full = planted_result("runs/code/full", {"q_proj": 224, "down_proj": 40})  # one 256 × 256 matrix each
    fig = plot_headline(full, lora_rank=16)
    (ax,) = fig.axes
    assert _ratios(ax) == ["14.0× r · 88%", "2.5× r · 16%"]
    assert ax.get_xscale() == "linear" and ax.get_xlim()[0] == 0
    assert [t.get_text() for t in ax.get_yticklabels()] == ["q_proj", "down_proj"]
    low, high = WIDTH_RANGE
    for band in _bands(ax):  # the paper's 3.9–39% of this row's width (256)
        assert band.get_x() == pytest.approx(low * 256)
        assert band.get_width() == pytest.approx((high - low) * 256)
    widths = [line.get_xdata()[0] for line in ax.lines if line.get_gid() == WIDTH_GID]
    assert widths == [256, 256]
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == [
        "paper's band (3.9–39% of width)",
        "width",
        "Gaussian r₀.₉",
        "LoRA r = 16",
        "full FT r₀.₉",
    ]


def test_whiskers_span_the_interquartile_range_over_layers() -> None:
    full = full_result(layers=4)
    fig = plot_headline([full, lora_result(rank=4)])
    (ax,) = fig.axes
    modules = list(SHAPES)
    for module, label in zip(modules, _ratios(ax), strict=True):
        values = sorted(m.ranks["energy_90"] for m in full.matrices if m.module == module)
        median = (values[1] + values[2]) / 2  # four layers
        assert label.startswith(f"{median / 4:.1f}× r · {median / min(SHAPES[module]):.0%}")
    whiskers = [c for c in ax.collections if isinstance(c, LineCollection)]
    assert whiskers  # error bars drawn for the full run and for LoRA's measured r₀.₉
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "LoRA r₀.₉" in legend and "LoRA r = 4" in legend


def test_headline_one_dot_series_per_full_run() -> None:
    a = planted_result("runs/a/full", {"q_proj": 160})
    b = planted_result("runs/b/full-long", {"q_proj": 320})
    fig = plot_headline([a, b], lora_rank=16)
    (ax,) = fig.axes
    assert _ratios(ax) == ["10.0× r · 62%", "20.0× r · 125%"]
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend[-2:] == ["full FT r₀.₉, full", "full FT r₀.₉, full-long"]


def test_headline_needs_full_and_a_rank() -> None:
    with pytest.raises(DeltarankError, match="needs a full fine-tuning result"):
        plot_headline(lora_result())
    with pytest.raises(DeltarankError, match="needs a LoRA rank"):
        plot_headline(full_result())
