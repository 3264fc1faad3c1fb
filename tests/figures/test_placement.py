"""The placement figure: one panel per module type, the four shares against layer, chance k/m and k/n behind
them; drawn from a result alone, for any stored subspace size."""

from __future__ import annotations

import pytest

from deltarank.analysis.results.placement import (
    MatrixPlacement,
    PlacementResult,
    SubspacePlacement,
    module_placements,
)
from deltarank.errors import DeltarankError
from deltarank.figures.placement import CHANCE_GID, plot_placement


def entry(
    key: str, k: int, shape: tuple[int, int], top: float | None, bottom: float | None
) -> SubspacePlacement:
    return SubspacePlacement(
        key=key,
        k=k,
        left_top=top,
        left_bottom=bottom,
        left_chance=k / shape[0],
        right_top=top,
        right_bottom=bottom,
        right_chance=k / shape[1],
        left_cosines=(1.0,) * k,
        right_cosines=(1.0,) * k,
        left_mean_cos2=1.0,
        right_mean_cos2=1.0,
    )


def record(module: str, layer: int | None, shape: tuple[int, int], top: float, k: int) -> MatrixPlacement:
    return MatrixPlacement(
        name=f"model.layers.{layer}.{module}.weight" if layer is not None else f"{module}.weight",
        layer=layer,
        module=module,
        shape=shape,
        kind="dense",
        base_dtype="F32",
        tuned_dtype="F32",
        delta_norm=1.0,
        base_norm=10.0,
        energy_90=k,
        subspaces=(entry("energy_90", k, shape, top, 1 - top), entry("k2", 2, shape, 0.5, 0.1)),
        base_sigma=(2.0, 1.0),
        tuned_sigma=(2.2, 1.0),
        sigma_change=(0.1, 0.0),
    )


def result() -> PlacementResult:
    matrices = (
        *(record("q_proj", layer, (32, 32), 0.2 * layer, k=layer + 1) for layer in range(4)),
        *(record("up_proj", layer, (64, 32), 0.9, k=4) for layer in range(4)),
        record("lm_head", None, (128, 32), 0.5, k=4),  # no layer: not drawn
    )
    return PlacementResult(
        base="base",
        tuned="runs/rl",
        sizes=(2,),
        sigma_top=2,
        device="cpu",
        precision="float32",
        matrices=matrices,
        modules=module_placements(matrices, 2),
    )


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
