"""Figure 3, the headline: full fine-tuning r₀.₉ next to the LoRA rank, ratio written on the bars."""

from __future__ import annotations

import pytest
from matplotlib.patches import Rectangle

from deltarank.errors import DeltarankError
from deltarank.figures.headline import RATIO_GID, plot_headline
from tests.figures.synthetic import full_result, lora_result, planted_result


def _bars(ax) -> list[Rectangle]:  # type: ignore[no-untyped-def]
    return [p for p in ax.patches if isinstance(p, Rectangle)]


def _ratios(ax) -> list[str]:  # type: ignore[no-untyped-def]
    return [t.get_text() for t in ax.texts if t.get_gid() == RATIO_GID]


def test_headline_writes_the_ratio_on_the_bar() -> None:
    full = planted_result("runs/code/full", {"q_proj": 224, "down_proj": 40})
    fig = plot_headline(full, lora_rank=16)
    (ax,) = fig.axes
    assert _ratios(ax) == ["14×", "2.5×"]
    bars = _bars(ax)
    assert len(bars) == 2 * 3  # per module: full, LoRA r, Gaussian
    widths = sorted(b.get_width() for b in bars)
    assert 224 in widths and 40 in widths and widths.count(16) == 2
    assert ax.get_xscale() == "log"
    assert ax.get_xlabel() == "rank for 90% of ΔW energy"
    assert [t.get_text() for t in ax.get_yticklabels()] == ["q_proj", "down_proj"]
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["full FT r₀.₉ (median)", "LoRA r = 16", "Gaussian r₀.₉"]


def test_headline_takes_r_from_a_lora_result() -> None:
    fig = plot_headline([full_result(), lora_result(rank=4)])
    (ax,) = fig.axes
    assert len(_bars(ax)) == 3 * 3
    assert len(_ratios(ax)) == 3
    assert "LoRA r = 4" in [t.get_text() for t in fig.legends[0].get_texts()]


def test_headline_one_bar_per_full_run() -> None:
    a = planted_result("runs/a/full", {"q_proj": 160})
    b = planted_result("runs/b/full-long", {"q_proj": 320})
    fig = plot_headline([a, b], lora_rank=16)
    (ax,) = fig.axes
    assert _ratios(ax) == ["10×", "20×"]
    assert len(_bars(ax)) == 4
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend[:2] == ["full FT r₀.₉, full", "full FT r₀.₉, full-long"]


def test_headline_needs_full_and_a_rank() -> None:
    with pytest.raises(DeltarankError, match="needs a full fine-tuning result"):
        plot_headline(lora_result())
    with pytest.raises(DeltarankError, match="needs a LoRA rank"):
        plot_headline(full_result())
