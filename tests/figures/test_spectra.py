"""Figure 1: normalised spectra and cumulative energy against the Gaussian reference."""

from __future__ import annotations

import numpy as np
import pytest

from deltarank.figures.spectra import REFERENCE_LABEL, normalised_curves, plot_spectra
from tests.figures.synthetic import SHAPES, full_result, lora_result, marchenko_pastur_sigma


def _named(ax) -> list[str]:  # type: ignore[no-untyped-def]
    return [line.get_label() for line in ax.get_lines() if not line.get_label().startswith("_")]


def test_normalised_curves_pad_and_normalise() -> None:
    sig, cum = normalised_curves([4.0, 2.0], 4)  # a rank-2 delta of a 4-wide matrix
    np.testing.assert_allclose(sig, [1.0, 0.5, 0.0, 0.0])
    np.testing.assert_allclose(cum, [0.8, 1.0, 1.0, 1.0])
    zero_sig, zero_cum = normalised_curves([0.0, 0.0], 2)
    assert not zero_sig.any() and not zero_cum.any()


def test_spectra_panels_lines_and_labels() -> None:
    fig = plot_spectra([full_result(), lora_result()])
    axes = fig.axes
    assert len(axes) == 2 * len(SHAPES)  # σ panel + energy panel per module type; no spare cell (1 × 3)
    sigma_axes, energy_axes = axes[0::2], axes[1::2]
    assert [ax.get_title() for ax in sigma_axes] == list(SHAPES)
    for ax in sigma_axes:
        assert ax.get_yscale() == "log"
        assert _named(ax) == ["full", "lora", REFERENCE_LABEL]
    for ax in energy_axes:
        assert _named(ax) == ["full", "lora", REFERENCE_LABEL]
        assert ax.get_xlabel() == "i / n"
        assert ax.get_ylim() == pytest.approx((0, 1.04))
    assert sigma_axes[0].get_ylabel() == "σᵢ / σ₁"
    assert energy_axes[0].get_ylabel() == "cum. energy"
    assert sigma_axes[1].get_ylabel() == ""
    legend_texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend_texts[:3] == ["full", "lora", REFERENCE_LABEL]


def test_spectra_markers_sit_at_median_r90_over_n() -> None:
    lora = lora_result(rank=4)
    fig = plot_spectra(lora, modules=["q_proj"])
    ax_energy = fig.axes[1]
    markers = [line for line in ax_energy.get_lines() if line.get_label() == "_r90"]
    n = SHAPES["q_proj"][1]
    expected = np.median([m.ranks["energy_90"] for m in lora.matrices if m.module == "q_proj"]) / n
    assert markers[0].get_xdata()[0] == pytest.approx(expected)
    assert markers[0].get_ydata()[0] == pytest.approx(0.9)
    tau = [line for line in ax_energy.get_lines() if line.get_label() == "_tau"]
    assert len(tau) == 1


def test_spectra_reference_is_the_marchenko_pastur_curve() -> None:
    fig = plot_spectra(full_result(), modules=["k_proj"])
    ref = next(line for line in fig.axes[0].get_lines() if line.get_label() == REFERENCE_LABEL)
    rows, cols = SHAPES["k_proj"]  # 16 × 48: y = 1/3, σ between 1 − √y and 1 + √y (times √max)
    sigma = marchenko_pastur_sigma(rows, cols)  # the law's quantiles, computed without the package
    np.testing.assert_allclose(ref.get_ydata(), sigma / sigma[0], rtol=1e-5)
    np.testing.assert_allclose(ref.get_xdata(), (np.arange(rows) + 1) / rows)
    energy = next(line for line in fig.axes[1].get_lines() if line.get_label() == REFERENCE_LABEL)
    np.testing.assert_allclose(energy.get_ydata(), np.cumsum(sigma**2) / np.sum(sigma**2), rtol=1e-5)


def test_lora_curve_stops_at_its_rank() -> None:
    fig = plot_spectra(lora_result(rank=4), modules=["q_proj"])
    line = next(line for line in fig.axes[0].get_lines() if line.get_label() == "lora")
    y = np.asarray(line.get_ydata(), dtype=float)
    assert np.isfinite(y[:4]).all() and np.isnan(y[4:]).all()  # zeros are not drawn on the log axis


def test_spectra_legend_in_the_spare_cell_when_there_is_one() -> None:
    shapes = {f"m{i}_proj": (16, 16) for i in range(5)}  # 5 panels in a 2 × 4 grid: 3 spare cells
    fig = plot_spectra(full_result(shapes=shapes, layers=2))
    assert len(fig.axes) == 2 * 5 + 1
    spare = fig.axes[-1]
    assert not spare.axison
    assert spare.get_legend() is not None
    assert fig.get_size_inches()[0] == pytest.approx(7.0)
