"""Canonical names, layer/module parsing and the default selection (2-D block weights only)."""

from __future__ import annotations

import pytest

from deltarank.errors import DeltarankError
from deltarank.io.naming import Selection, canonical_name, layer_index, module_type

Q = "model.layers.0.self_attn.q_proj.weight"


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight", Q),  # PEFT wrapper
        ("base_model.model.model.layers.0.self_attn.q_proj.weight", Q),
        ("model.layers.0.self_attn.q_proj.base_layer.weight", Q),
        ("_orig_mod.model.layers.0.self_attn.q_proj.weight", Q),  # torch.compile
        ("module.model.layers.0.self_attn.q_proj.weight", Q),  # DDP
        (Q, Q),
        ("transformer.h.0.attn.c_attn.weight", "transformer.h.0.attn.c_attn.weight"),
    ],
)
def test_canonical_name(raw: str, canonical: str) -> None:
    assert canonical_name(raw) == canonical


@pytest.mark.parametrize(
    ("name", "layer", "module"),
    [
        (Q, 0, "q_proj"),
        ("model.layers.17.mlp.down_proj.weight", 17, "down_proj"),
        ("transformer.h.11.attn.c_attn.weight", 11, "c_attn"),  # GPT-2
        ("encoder.block.3.layer.1.DenseReluDense.wi.weight", 3, "wi"),  # T5: the block, not the sub-layer
        ("model.embed_tokens.weight", None, "embed_tokens"),
        ("lm_head.weight", None, "lm_head"),
        ("model.layers.2.self_attn.q_proj.bias", 2, "q_proj"),
        # Shared leaf names keep their path inside the block, so different matrices are not pooled.
        ("transformer.h.0.attn.c_proj.weight", 0, "attn.c_proj"),
        ("transformer.h.0.mlp.c_proj.weight", 0, "mlp.c_proj"),
        ("bert.encoder.layer.5.attention.output.dense.weight", 5, "attention.output.dense"),
        ("bert.encoder.layer.5.output.dense.weight", 5, "output.dense"),
        ("decoder.block.1.layer.1.EncDecAttention.q.weight", 1, "layer.1.EncDecAttention.q"),
        ("pooler.dense.weight", None, "pooler.dense"),
    ],
)
def test_layer_and_module(name: str, layer: int | None, module: str) -> None:
    assert layer_index(name) == layer
    assert module_type(name) == module


@pytest.mark.parametrize(
    ("name", "ndim", "wanted"),
    [
        (Q, 2, True),
        ("model.layers.1.mlp.gate_proj.weight", 2, True),
        ("transformer.h.0.mlp.c_fc.weight", 2, True),
        ("model.layers.0.mlp.shared_expert.down_proj.weight", 2, True),  # MoE shared expert is a block weight
        ("model.embed_tokens.weight", 2, False),
        ("lm_head.weight", 2, False),
        ("transformer.wte.weight", 2, False),
        ("model.layers.0.input_layernorm.weight", 1, False),
        ("model.norm.weight", 1, False),
        ("model.layers.0.self_attn.q_proj.bias", 1, False),
    ],
)
def test_default_selection_is_2d_block_weights(name: str, ndim: int, wanted: bool) -> None:
    assert Selection().wants(name, ndim) is wanted


def test_include_brings_embeddings_and_lm_head() -> None:
    selection = Selection(include=r"embed_tokens|lm_head")
    assert selection.wants("model.embed_tokens.weight", 2)
    assert selection.wants("lm_head.weight", 2)
    assert not selection.wants(Q, 2)  # include replaces the default
    assert not selection.wants("model.norm.weight", 1)  # still 2-D only
    everything = Selection(include=".")
    assert everything.wants("lm_head.weight", 2) and everything.wants(Q, 2)


def test_exclude_drops_after_include() -> None:
    assert not Selection(exclude=r"\.mlp\.").wants("model.layers.0.mlp.up_proj.weight", 2)
    assert Selection(exclude=r"\.mlp\.").wants(Q, 2)
    assert not Selection(include=".", exclude="lm_head").wants("lm_head.weight", 2)


@pytest.mark.parametrize("option", ["include", "exclude"])
def test_invalid_regex_is_a_user_error(option: str) -> None:
    with pytest.raises(DeltarankError, match=f"--{option} '\\(' is not a valid regular expression"):
        Selection(**{option: "("})
