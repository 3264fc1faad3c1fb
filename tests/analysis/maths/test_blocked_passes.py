"""Large matrices are swept in blocks of rows (Gram, noise pass): same results as one pass, less memory."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from deltarank.analysis.maths import noise, svd
from deltarank.analysis.maths.arrays import row_blocks


def test_row_blocks_cover_every_row_once() -> None:
    blocks = row_blocks(1000, 300, entries=7000)  # 23 rows a block
    assert blocks[0] == slice(0, 23) and blocks[-1].stop == 1000
    assert sum(b.stop - b.start for b in blocks) == 1000
    assert all(a.stop == b.start for a, b in itertools.pairwise(blocks))
    assert row_blocks(5, 10**9) == [slice(i, i + 1) for i in range(5)]  # at least one row


@pytest.mark.parametrize("shape", [(900, 120), (120, 900)])  # tall, and wide (the Gram of the other side)
def test_blocked_gram_gives_the_one_pass_sigma(
    shape: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    delta = torch.randn(*shape, generator=torch.Generator().manual_seed(0)) * torch.logspace(0, -6, shape[1])
    one_pass = svd.gram_singular_values(delta)
    monkeypatch.setattr(svd, "LARGE_ENTRIES", 1000)  # every matrix counts as large: blocked
    calls: list[tuple[int, int]] = []
    original = svd._blocked_gram
    monkeypatch.setattr(svd, "_blocked_gram", lambda tall: calls.append(tall.shape) or original(tall))
    blocked = svd.gram_singular_values(delta)
    assert calls == [(max(shape), min(shape))]
    sigma_1 = float(one_pass[0])
    assert float((blocked - one_pass).abs().max()) <= 1e-12 * sigma_1
    exact = np.linalg.svd(delta.double().numpy(), compute_uv=False)  # and both within the Gram bound
    assert np.abs(blocked.double().numpy() - exact).max() <= svd.gram_error_bound(min(shape)) * sigma_1


@pytest.mark.parametrize("uneven", [False, True])
def test_blocked_noise_pass_gives_the_one_pass_model(uneven: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    generator = torch.Generator().manual_seed(1)
    weights = torch.randn(300, 200, generator=generator)
    if uneven:  # a few large rows: uneven noise norms, the Monte-Carlo null keeps the whole variance array
        weights[:5] *= 1e3
    stored = weights.to(torch.bfloat16)
    stored[7, 9] = 0.0
    one_pass = noise.storage_noise(stored, "BF16")
    monkeypatch.setattr(noise, "LARGE_ENTRIES", 1000)
    blocked = noise.storage_noise(stored, "BF16")
    assert blocked.bound == one_pass.bound and blocked.scale == one_pass.scale
    assert blocked.analytic == pytest.approx(one_pass.analytic, rel=1e-12)
    assert (blocked.relative is None) == (one_pass.relative is None) == (not uneven)
    if uneven:
        assert blocked.relative is not None and one_pass.relative is not None
        assert torch.equal(blocked.relative, one_pass.relative)
        assert blocked.edge(0.0) == pytest.approx(one_pass.edge(0.0), rel=1e-12)
