"""Pairing base and tuned tensors by canonical name: never by order, mismatches skipped and listed."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from deltarank.errors import PairingError
from deltarank.io.naming import Selection
from deltarank.io.pairing import plan_dense
from deltarank.io.safetensors_file import SafetensorsSource
from tests.planting import write_safetensors_bytes

Q0 = "model.layers.0.self_attn.q_proj.weight"
K0 = "model.layers.0.self_attn.k_proj.weight"
V0 = "model.layers.0.self_attn.v_proj.weight"
NORM0 = "model.layers.0.input_layernorm.weight"
EMBED = "model.embed_tokens.weight"


def _source(path: Path, tensors: dict[str, torch.Tensor]) -> SafetensorsSource:
    return SafetensorsSource(write_safetensors_bytes(path, tensors))


def _base(tmp_path: Path) -> SafetensorsSource:
    return _source(
        tmp_path / "base.safetensors",
        {
            EMBED: torch.zeros(10, 4),
            Q0: torch.zeros(4, 4),
            K0: torch.zeros(2, 4),
            V0: torch.zeros(2, 4),
            NORM0: torch.ones(4),
        },
    )


def test_pairs_by_name_not_order_and_strips_peft_prefixes(tmp_path: Path) -> None:
    tuned = _source(
        tmp_path / "tuned.safetensors",
        {
            f"base_model.model.{V0}": torch.ones(2, 4, dtype=torch.bfloat16),
            "base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight": torch.ones(4, 4),
            f"base_model.model.{K0}": torch.ones(2, 4),
        },
    )
    pairs, skipped = plan_dense(_base(tmp_path), tuned, Selection())
    assert [(p.name, p.shape) for p in pairs] == [(Q0, (4, 4)), (K0, (2, 4)), (V0, (2, 4))]  # base order
    assert pairs[0].tuned_key == "base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight"
    assert (pairs[2].base_dtype, pairs[2].tuned_dtype) == ("F32", "BF16")
    assert skipped == []  # embeddings and norms are not selected, so their absence is not listed


def test_shape_mismatch_and_missing_are_skipped_and_listed(tmp_path: Path) -> None:
    tuned = _source(
        tmp_path / "tuned.safetensors",
        {Q0: torch.ones(4, 4), K0: torch.ones(2, 3), "model.layers.0.mlp.extra.weight": torch.ones(3, 3)},
    )
    pairs, skipped = plan_dense(_base(tmp_path), tuned, Selection())
    assert [p.name for p in pairs] == [Q0]
    assert sorted((s.name, s.reason) for s in skipped) == [
        ("model.layers.0.mlp.extra.weight", "missing in base checkpoint"),
        (K0, "shape mismatch: base (2, 4), tuned (2, 3)"),
        (V0, "missing in tuned checkpoint"),
    ]


def test_disjoint_tensor_sets_are_an_error_naming_both_files(tmp_path: Path) -> None:
    tuned = _source(tmp_path / "other.safetensors", {"encoder.layer.0.dense.weight": torch.ones(4, 4)})
    with pytest.raises(
        PairingError, match=r"base\.safetensors and .*other\.safetensors have no tensor name in common"
    ):
        plan_dense(_base(tmp_path), tuned, Selection())


def test_every_selected_tensor_differing_in_shape_is_an_error(tmp_path: Path) -> None:
    tuned = _source(
        tmp_path / "tuned.safetensors", {Q0: torch.ones(8, 8), K0: torch.ones(4, 8), V0: torch.ones(4, 8)}
    )
    with pytest.raises(PairingError, match="every selected tensor differs in shape"):
        plan_dense(_base(tmp_path), tuned, Selection())


def test_include_selects_embeddings(tmp_path: Path) -> None:
    tuned = _source(tmp_path / "tuned.safetensors", {EMBED: torch.ones(10, 4), Q0: torch.ones(4, 4)})
    pairs, skipped = plan_dense(_base(tmp_path), tuned, Selection(include="embed"))
    assert [p.name for p in pairs] == [EMBED]
    assert skipped == []
