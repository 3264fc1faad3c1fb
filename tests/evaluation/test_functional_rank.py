"""Functional rank on a tiny Llama whose tuned weights are the base plus a planted rank-2 ΔW in every block
linear weight: two directions carry all of the learning."""

from __future__ import annotations

import copy

import pytest
import torch

from deltarank.evaluation.functional_rank import functional_rank
from deltarank.evaluation.loss import sequence_loss
from deltarank.io.naming import layer_index
from deltarank.train.formats import IGNORE_INDEX
from tests.conftest import build_tiny_llama

EXAMPLES = [
    ([5, 9, 2, 7, 11, 4, 3, 8], [IGNORE_INDEX, 9, 2, 7, 11, 4, 3, 8]),
    ([1, 6, 6, 2, 9], [IGNORE_INDEX, 6, 6, 2, 9]),
]


def tuned_with_rank(base: torch.nn.Module, rank: int, scale: float) -> torch.nn.Module:
    tuned = copy.deepcopy(base)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in tuned.named_parameters():
            if p.ndim == 2 and layer_index(name) is not None:
                left = torch.randn(p.shape[0], rank, generator=generator)
                right = torch.randn(rank, p.shape[1], generator=generator)
                p += scale * (left @ right) / p.shape[1] ** 0.5
    return tuned.eval()


def test_a_planted_rank_two_delta_is_recovered_by_two_directions() -> None:
    base = build_tiny_llama().eval()
    tuned = tuned_with_rank(base, rank=2, scale=0.5)
    before = {n: p.clone() for n, p in tuned.named_parameters()}
    found = functional_rank(base, tuned, EXAMPLES, pad_id=0, ks=(1, 2, 4, 64))
    widest = max(
        min(p.shape) for n, p in tuned.named_parameters() if p.ndim == 2 and layer_index(n) is not None
    )
    assert found["ks"] == [1, 2, 4, min(64, widest)]
    assert found["loss_tuned"] == sequence_loss(tuned, EXAMPLES, 0)
    assert found["loss_without_linear_deltas"] == pytest.approx(sequence_loss(base, EXAMPLES, 0), abs=1e-5)
    assert found["recovered"][1:] == pytest.approx([1.0, 1.0, 1.0], abs=1e-4)  # k ≥ 2 keeps the whole ΔW
    assert found["recovered"][0] != pytest.approx(1.0, abs=1e-3)  # one direction is not all of it
    assert found["k_90"] in (1, 2)
    assert all(torch.equal(p, before[n]) for n, p in tuned.named_parameters())  # weights restored


def test_no_learning_gives_no_functional_rank() -> None:
    base = build_tiny_llama().eval()
    found = functional_rank(base, copy.deepcopy(base), EXAMPLES, pad_id=0, ks=(1, 2))
    assert found["recovered"] == [None, None] and found["k_90"] is None
