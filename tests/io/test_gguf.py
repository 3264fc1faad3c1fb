"""GGUF: a tiny Llama written the way llama.cpp's converter writes it reads back as the Hugging Face weights,
exactly as transformers' own GGUF loading gives them; plus the real SmolLM2 GGUF (slow)."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaForCausalLM

from deltarank.analysis.engine import spectrum
from deltarank.errors import InputError
from deltarank.io.gguf_file import GGUFSource, hf_name
from deltarank.io.source import open_checkpoint
from tests.conftest import build_tiny_llama
from tests.planting import gguf_name, plant, planted_delta, save_safetensors, write_llama_gguf

SIGMA_RTOL = 1e-5
Q0 = "model.layers.0.self_attn.q_proj.weight"
K1 = "model.layers.1.self_attn.k_proj.weight"


@pytest.fixture(scope="module")
def tiny() -> LlamaForCausalLM:
    return build_tiny_llama()


@pytest.fixture(scope="module")
def tiny_gguf(tiny: LlamaForCausalLM, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_llama_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf", tiny.state_dict(), tiny.config)


def test_gguf_gives_back_the_hf_weights(tiny: LlamaForCausalLM, tiny_gguf: Path) -> None:
    source = GGUFSource(tiny_gguf)
    state = tiny.state_dict()
    assert sorted(source.names()) == sorted(state)
    for name, weight in state.items():
        info = source.info(name)
        assert info.shape == tuple(weight.shape) and info.dtype == "F32", name
        assert torch.equal(source.read(name), weight), name


def test_q_and_k_rows_are_stored_permuted(tiny: LlamaForCausalLM, tiny_gguf: Path) -> None:
    """The file holds llama.cpp's row order, so the equality above depends on undoing it."""
    stored = {t.name: np.asarray(t.data) for t in gguf.GGUFReader(tiny_gguf).tensors}
    for name in (Q0, K1):
        raw = stored[gguf_name(name)].reshape(tiny.state_dict()[name].shape)
        assert not np.array_equal(raw, tiny.state_dict()[name].numpy()), name
    v_raw = stored["blk.0.attn_v.weight"]
    assert np.array_equal(v_raw, tiny.state_dict()["model.layers.0.self_attn.v_proj.weight"].numpy())


def test_gguf_equals_transformers_gguf_loading(tiny_gguf: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_gguf.parent, gguf_file=tiny_gguf.name)
    theirs = model.state_dict()
    source = GGUFSource(tiny_gguf)
    assert sorted(source.names()) == sorted(theirs)
    for name in source.names():
        assert torch.equal(source.read(name), theirs[name]), name
    assert model.config.num_key_value_heads == 2 and model.config.num_attention_heads == 4


def test_f16_gguf_reports_its_storage_dtype(tiny: LlamaForCausalLM, tmp_path: Path) -> None:
    path = write_llama_gguf(tmp_path / "f16.gguf", tiny.state_dict(), tiny.config, np_dtype=np.float16)
    source = GGUFSource(path)
    assert source.info(Q0).dtype == "F16"
    assert source.info("model.norm.weight").dtype == "F32"
    assert torch.equal(source.read(Q0), tiny.state_dict()[Q0].to(torch.float16).float())


@pytest.mark.parametrize(
    ("gguf_tensor", "hf"),
    [
        ("blk.3.attn_q.weight", "model.layers.3.self_attn.q_proj.weight"),
        ("blk.0.ffn_down.weight", "model.layers.0.mlp.down_proj.weight"),
        ("blk.1.attn_norm.weight", "model.layers.1.input_layernorm.weight"),
        ("blk.1.ffn_norm.weight", "model.layers.1.post_attention_layernorm.weight"),
        ("token_embd.weight", "model.embed_tokens.weight"),
        ("output_norm.weight", "model.norm.weight"),
        ("output.weight", "lm_head.weight"),
        ("rope_freqs.weight", None),
    ],
)
def test_hf_name_table(gguf_tensor: str, hf: str | None) -> None:
    assert hf_name(gguf_tensor) == hf


def test_planted_delta_through_a_gguf_base(tiny: LlamaForCausalLM, tiny_gguf: Path, tmp_path: Path) -> None:
    """GGUF base vs safetensors tuned: pairing across formats, and ΔW of permuted Q/K stays low-rank."""
    state = {n: t.detach() for n, t in tiny.state_dict().items()}
    plants = {Q0: [0.5, 0.2], K1: [0.3]}
    deltas = {n: planted_delta(tuple(state[n].shape), s, seed=i) for i, (n, s) in enumerate(plants.items())}
    save_safetensors(tmp_path / "tuned.safetensors", plant(state, deltas, torch.float32))
    result = spectrum(tiny_gguf, tmp_path / "tuned.safetensors", device="cpu", include="q_proj|k_proj")
    records = {m.name: m for m in result.matrices}
    assert len(records) == 4
    for name, sigma in plants.items():
        observed = records[name].singular_values
        np.testing.assert_allclose(observed[: len(sigma)], sigma, rtol=SIGMA_RTOL)
        assert records[name].ranks["noise_floor"] == len(sigma)
    assert records["model.layers.1.self_attn.q_proj.weight"].delta_norm == 0.0


def _writer(path: Path, arch: str) -> gguf.GGUFWriter:
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_tensor("blk.0.attn_q.weight", np.ones((8, 4), dtype=np.float32))
    return writer


def _close(writer: gguf.GGUFWriter) -> None:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_unsupported_architecture(tmp_path: Path) -> None:
    writer = _writer(tmp_path / "gpt2.gguf", "gpt2")
    _close(writer)
    with pytest.raises(InputError, match="GGUF architecture 'gpt2' is not supported"):
        open_checkpoint(tmp_path / "gpt2.gguf")


def test_llama_without_head_count(tmp_path: Path) -> None:
    _close(_writer(tmp_path / "nohead.gguf", "llama"))
    with pytest.raises(InputError, match="head_count"):
        GGUFSource(tmp_path / "nohead.gguf").read(Q0)


def test_q_rows_that_do_not_split_into_heads(tmp_path: Path) -> None:
    writer = _writer(tmp_path / "odd.gguf", "llama")
    writer.add_head_count(3)  # 8 rows do not split into 3 × 2 halves
    _close(writer)
    with pytest.raises(InputError, match="does not split into 3 heads"):
        GGUFSource(tmp_path / "odd.gguf").read(Q0)


@pytest.mark.parametrize("content", [b"", b"GGUF" + b"\x00" * 7, bytes(range(256)) * 8])
def test_corrupt_gguf(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.gguf"
    path.write_bytes(content)
    with pytest.raises(InputError, match="not a readable GGUF file") as excinfo:
        open_checkpoint(path)
    assert excinfo.value.path == str(path)


# --- the real model (slow) -----------------------------------------------------------------------------


SMOLLM2_LAYERS = (0, 14, 29)


@pytest.mark.slow
def test_smollm2_gguf_matches_transformers_loading(smollm2_gguf: Path) -> None:
    path = smollm2_gguf
    source = GGUFSource(path)
    assert len(source.names()) == 272  # 30 layers × 9 + embeddings + final norm (LM head tied)
    theirs = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name).state_dict()
    assert set(source.names()) == set(theirs) - {"lm_head.weight"}
    names = [n for n in source.names() if any(f"layers.{i}." in n for i in SMOLLM2_LAYERS)]
    assert len(names) == 9 * len(SMOLLM2_LAYERS)
    for name in [*names, "model.norm.weight"]:
        assert torch.equal(source.read(name), theirs[name]), name
    assert source.info("model.layers.0.self_attn.q_proj.weight").shape == (576, 576)
    assert source.info("model.layers.0.self_attn.k_proj.weight").shape == (192, 576)
    assert source.info("model.layers.0.self_attn.q_proj.weight").dtype == "Q4_1"


def test_q8_0_gguf_equals_transformers_gguf_loading(tiny: LlamaForCausalLM, tmp_path: Path) -> None:
    path = write_llama_gguf(tmp_path / "q8.gguf", tiny.state_dict(), tiny.config, quant="Q8_0")
    source = GGUFSource(path)
    assert source.info(Q0).dtype == "Q8_0" and source.info(Q0).shape == (32, 32)
    theirs = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name).state_dict()
    for name in source.names():
        assert torch.equal(source.read(name), theirs[name]), name
    # Q8_0 keeps 8 bits per weight: close to, but not equal to, the fp32 weights.
    error = (source.read(Q0) - tiny.state_dict()[Q0]).abs().max().item()
    assert 0 < error < 1e-3
