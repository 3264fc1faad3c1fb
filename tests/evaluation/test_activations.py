"""The second moment of each linear layer's inputs, from forward hooks on the tiny Llama."""

from __future__ import annotations

import pytest
import torch

from deltarank.errors import DeltarankError
from deltarank.evaluation.activations import input_second_moments
from deltarank.train.formats import IGNORE_INDEX
from tests.conftest import build_tiny_llama

SHORT = ([5, 9, 2], [IGNORE_INDEX, 9, 2])
LONG = ([1, 6, 6, 2, 9, 40, 41], [IGNORE_INDEX, 6, 6, 2, 9, 40, 41])
LAYER = "model.layers.0.self_attn"
WEIGHTS = [f"{LAYER}.{p}_proj.weight" for p in "qkv"] + ["model.layers.1.mlp.down_proj.weight"]


def test_one_input_one_moment_and_padding_left_out() -> None:
    model = build_tiny_llama().eval()
    both = input_second_moments(model, [SHORT, LONG], WEIGHTS, pad_id=0)
    q, k, v = (both[f"{LAYER}.{p}_proj.weight"] for p in "qkv")
    assert torch.equal(q, k) and torch.equal(q, v)  # one input: the layer norm's output
    assert q.shape == (32, 32) and both[WEIGHTS[-1]].shape == (64, 64)
    assert torch.linalg.eigvalsh(both[WEIGHTS[-1]]).min() > -1e-10  # positive semi-definite
    # the short sequence's padding counts for nothing: the batch is the token-weighted mean of its sequences
    alone = [input_second_moments(model, [seq], WEIGHTS, pad_id=0) for seq in (SHORT, LONG)]
    for name in WEIGHTS:
        expected = (3 * alone[0][name] + 7 * alone[1][name]) / 10
        torch.testing.assert_close(both[name], expected, rtol=1e-5, atol=1e-7)


def test_a_name_that_is_not_a_linear_weight_is_refused() -> None:
    with pytest.raises(DeltarankError, match="not the weight of a linear layer"):
        input_second_moments(build_tiny_llama(), [SHORT], ["model.norm.weight"], pad_id=0)
