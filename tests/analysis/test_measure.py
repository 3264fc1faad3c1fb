"""A pair's record is the same from the NumPy (CPU) and the torch (accelerator) dense forms, and batched."""

from __future__ import annotations

import pytest
import torch

from deltarank.analysis.engine.measure import MeasureSettings, measure, measure_batch
from deltarank.analysis.maths.deltas import DeltaInputs, _device_dense, dense_form
from deltarank.io.pairing import DensePair

LABELS = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16"}


@pytest.mark.parametrize("stored", list(LABELS))
@pytest.mark.parametrize("precision", [torch.float32, torch.float64])
def test_numpy_and_torch_dense_forms_give_the_same_record(
    stored: torch.dtype, precision: torch.dtype
) -> None:
    generator = torch.Generator().manual_seed(3)
    base = (torch.randn(96, 64, generator=generator) * 0.05).to(stored)
    update = torch.randn(96, 4, generator=generator) @ torch.randn(4, 64, generator=generator) * 1e-3
    tuned = (base.float() + update).to(stored)
    tuned[5, 7] = base[5, 7]  # an entry that did not move
    pair = DensePair("model.layers.0.mlp.up_proj.weight", "b", "t", (96, 64), LABELS[stored], LABELS[stored])
    settings = MeasureSettings(
        precision, (0.5, 0.9, 0.99), solver="gram" if precision == torch.float32 else "svd"
    )

    direct = measure(pair, _device_dense(base, tuned, LABELS[stored], precision), settings)  # torch ops
    inputs = DeltaInputs("dense", LABELS[stored])
    prepared = measure(pair, dense_form({"base": base, "tuned": tuned}, inputs, precision), settings)  # NumPy

    assert prepared.singular_values == pytest.approx(direct.singular_values, rel=0, abs=1e-12)
    assert prepared.ranks == pytest.approx(direct.ranks, rel=1e-9)
    assert prepared.noise_edge == pytest.approx(direct.noise_edge, rel=1e-6)
    assert prepared.erased_fraction == direct.erased_fraction >= 1 / (96 * 64)
    assert prepared.base_norm == pytest.approx(direct.base_norm, rel=1e-6)
    if stored != torch.float32:  # low-precision storage: the noise edge is above the numerical floor
        assert direct.ranks["noise_floor"] < direct.ranks["numerical"]


def test_a_batched_call_gives_the_records_of_single_calls() -> None:
    """The CUDA path's batching (one stacked decomposition), run here on the CPU: same records, same deltas."""
    generator = torch.Generator().manual_seed(4)
    items = []
    for i, rank in enumerate((1, 3)):
        base = torch.randn(40, 24, generator=generator)
        left = torch.randn(40, rank, generator=generator)
        left[i] = 0  # one row that does not move
        tuned = base + 1e-2 * (left @ torch.randn(rank, 24, generator=generator))
        pair = DensePair(f"model.layers.{i}.mlp.up_proj.weight", "b", "t", (40, 24), "F32", "F32")
        items.append(
            (pair, dense_form({"base": base, "tuned": tuned}, DeltaInputs("dense", "F32"), torch.float32))
        )
    settings = MeasureSettings(torch.float32, (0.5, 0.9, 0.99), solver="svd")

    batched = measure_batch(items, settings)
    single = [measure(pair, delta, settings) for pair, delta in items]

    assert [r.ranks["noise_floor"] for r in batched] == [1, 3]
    for b, s in zip(batched, single, strict=True):
        assert b.singular_values == pytest.approx(s.singular_values, rel=1e-5, abs=1e-7)
        assert b.ranks == s.ranks
        assert b.erased_fraction == s.erased_fraction == 1 / 40
