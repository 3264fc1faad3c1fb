"""The placement figure: one panel per module type, the four shares against layer, chance k/m and k/n behind
them; drawn from a result alone, for any stored subspace size."""

from __future__ import annotations

import pytest

from deltarank.errors import DeltarankError
from deltarank.figures.placement import CHANCE_GID, plot_placement
from tests.figures.synthetic import placement_result as result


def test_one_panel_per_layered_module_with_shares_and_chance() -> None:
    fig = plot_placement(result())
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["q", "up"]
    q, up = panels
    lines = {line.get_label(): line for line in q.get_lines()}
    assert list(lines["top-k, left"].get_xdata()) == [0, 1, 2, 3]
    assert list(lines["top-k, left"].get_ydata()) == pytest.approx([0.0, 0.2, 0.4, 0.6])
    assert list(lines["bottom-k, right"].get_ydata()) == pytest.approx([1.0, 0.8, 0.6, 0.4])
    chance = [line for line in q.get_lines() if line.get_gid() == CHANCE_GID]
    assert [list(c.get_ydata()) for c in chance] == [[(k + 1) / 32 for k in range(4)]] * 2  # k = r₀.₉ varies
    up_chance = {
        line.get_label(): list(line.get_ydata()) for line in up.get_lines() if line.get_gid() == CHANCE_GID
    }
    assert up_chance == {"chance k/m, left": [4 / 64] * 4, "chance k/n, right": [4 / 32] * 4}
    assert "r₀.₉" in fig.get_suptitle()


def test_an_asked_size_and_a_result_with_nothing_to_draw() -> None:
    fig = plot_placement(result(), key="k2")
    q = next(ax for ax in fig.axes if ax.get_title() == "q")
    tops = next(line for line in q.get_lines() if line.get_label() == "top-k, left")
    assert list(tops.get_ydata()) == pytest.approx([0.5] * 4)
    assert "k = 2" in fig.get_suptitle()
    with pytest.raises(DeltarankError, match="k 'k8'"):
        plot_placement(result(), key="k8")


def test_module_summaries_hold_medians_and_quartiles() -> None:
    q = result().module("q_proj")
    assert q is not None and q.matrices == 4
    top = q.subspaces["energy_90"]["left_top"]
    assert (top["median"], top["q1"], top["q3"], top["layers"]) == pytest.approx((0.3, 0.15, 0.45, 4))
    assert q.sigma_change[0] is not None and q.sigma_change[0]["median"] == pytest.approx(0.1)
