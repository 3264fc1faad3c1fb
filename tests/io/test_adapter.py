"""PEFT LoRA / DoRA adapter directories made with real peft: every σ against peft's own ΔW.

LoRA: σ(s·B·A) from the QR fast path against svdvals of peft's `get_delta_weight`; DoRA: against the merged
model's weights minus the base (peft's merge). The references are computed in float64 (peft model cast to
double after saving its float32 adapter).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from deltarank.analysis.engine import spectrum
from deltarank.analysis.results import MatrixSpectrum, SpectrumResult
from deltarank.errors import InputError, PairingError
from deltarank.io.adapter import AdapterSource
from tests.conftest import build_tiny_llama
from tests.planting import make_lora_adapter

SIGMA_RTOL = 1e-5
LLAMA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
PEFT_PREFIX = "base_model.model."


def _records(result: SpectrumResult) -> dict[str, MatrixSpectrum]:
    return {m.name: m for m in result.matrices}


def _lora_layers(model: torch.nn.Module) -> dict[str, Any]:
    """Base weight name -> peft LoRA layer, e.g. model.layers.0.self_attn.q_proj.weight -> its LoraLayer."""
    from peft.tuners.lora import LoraLayer

    return {
        f"{name.removeprefix(PEFT_PREFIX)}.weight": module
        for name, module in model.named_modules()
        if isinstance(module, LoraLayer)
    }


def _peft_delta_sigma(layer: Any) -> np.ndarray:
    """svdvals of peft's own ΔW of one layer (float64)."""
    with torch.no_grad():
        return torch.linalg.svdvals(layer.get_delta_weight("default").double()).numpy()


def _assert_sigma(record: MatrixSpectrum, expected: np.ndarray, rank: int) -> None:
    """Every σ: the r non-zero ones relative, the rest (exactly 0 for a rank-r product) relative to σ₁."""
    observed = np.asarray(record.singular_values)
    assert observed.shape == expected.shape
    np.testing.assert_allclose(observed[:rank], expected[:rank], rtol=SIGMA_RTOL)
    assert np.all(np.abs(observed[rank:] - expected[rank:]) <= SIGMA_RTOL * expected[0])


@pytest.fixture(scope="module")
def llama_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("llama") / "base"
    build_tiny_llama().save_pretrained(out)
    return out


@pytest.mark.parametrize("use_rslora", [False, True])
def test_lora_every_sigma_matches_peft(llama_base: Path, tmp_path: Path, use_rslora: bool) -> None:
    model = make_lora_adapter(
        build_tiny_llama,
        tmp_path / "adapter",
        r=4,
        lora_alpha=8,
        target_modules=LLAMA_TARGETS,
        use_rslora=use_rslora,
    )
    result = spectrum(llama_base, tmp_path / "adapter", device="cpu")
    records = _records(result)
    layers = _lora_layers(model.double())
    assert sorted(records) == sorted(layers)  # named by base weight, all 14 adapted weights
    assert "model.layers.0.self_attn.q_proj.weight" in records
    for name, layer in layers.items():
        assert layer.scaling["default"] == (8 / math.sqrt(4) if use_rslora else 8 / 4)
        record = records[name]
        assert (record.kind, record.lora_rank, record.tuned_dtype) == ("lora", 4, "F32")
        _assert_sigma(record, _peft_delta_sigma(layer), rank=4)
        assert record.ranks["numerical"] == record.ranks["noise_floor"] == 4


def test_rank_and_alpha_patterns(llama_base: Path, tmp_path: Path) -> None:
    rank_pattern = {"down_proj": 2, "model.layers.1.self_attn.q_proj": 6}
    alpha_pattern = {"v_proj": 3, "layers.0.mlp.up_proj": 20}
    model = make_lora_adapter(
        build_tiny_llama,
        tmp_path / "adapter",
        r=4,
        lora_alpha=8,
        target_modules=LLAMA_TARGETS,
        rank_pattern=rank_pattern,
        alpha_pattern=alpha_pattern,
    )
    records = _records(spectrum(llama_base, tmp_path / "adapter", device="cpu"))
    layers = _lora_layers(model.double())
    expected_rank = {
        "model.layers.0.mlp.down_proj.weight": 2,
        "model.layers.1.mlp.down_proj.weight": 2,
        "model.layers.1.self_attn.q_proj.weight": 6,
        "model.layers.0.self_attn.q_proj.weight": 4,
    }
    for name, rank in expected_rank.items():
        assert records[name].lora_rank == rank == layers[name].r["default"]
    assert layers["model.layers.0.self_attn.v_proj.weight"].scaling["default"] == 3 / 4
    assert layers["model.layers.0.mlp.up_proj.weight"].scaling["default"] == 20 / 4
    assert layers["model.layers.1.mlp.up_proj.weight"].scaling["default"] == 8 / 4
    for name, layer in layers.items():
        _assert_sigma(records[name], _peft_delta_sigma(layer), rank=layer.r["default"])


def _tiny_gpt2() -> GPT2LMHeadModel:
    torch.manual_seed(0)
    config = GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=128, n_positions=64)
    return GPT2LMHeadModel(config).eval()


def test_fan_in_fan_out_gpt2_conv1d(tmp_path: Path) -> None:
    _tiny_gpt2().save_pretrained(tmp_path / "base")
    model = make_lora_adapter(
        _tiny_gpt2,
        tmp_path / "adapter",
        r=4,
        lora_alpha=16,
        target_modules=["c_attn", "c_fc"],
        fan_in_fan_out=True,
    )
    records = _records(spectrum(tmp_path / "base", tmp_path / "adapter", device="cpu"))
    layers = _lora_layers(model.double())
    assert (
        sorted(records)
        == sorted(layers)
        == [
            "transformer.h.0.attn.c_attn.weight",
            "transformer.h.0.mlp.c_fc.weight",
            "transformer.h.1.attn.c_attn.weight",
            "transformer.h.1.mlp.c_fc.weight",
        ]
    )
    assert records["transformer.h.0.attn.c_attn.weight"].shape == (32, 96)  # Conv1D weight is (in, out)
    for name, layer in layers.items():
        assert layer.fan_in_fan_out
        with torch.no_grad():
            delta = layer.get_delta_weight("default")
        assert tuple(delta.shape) == records[name].shape
        _assert_sigma(records[name], _peft_delta_sigma(layer), rank=4)


def _dora_reference(model: torch.nn.Module, base: torch.nn.Module) -> dict[str, np.ndarray]:
    """σ of (peft's merged weight − base weight) per adapted weight, in float64."""
    names = list(_lora_layers(model))
    with torch.no_grad():
        merged = model.double().merge_and_unload().state_dict()
    base_state = base.double().state_dict()
    return {name: torch.linalg.svdvals(merged[name] - base_state[name]).numpy() for name in names}


@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_dora_matches_peft_merge(llama_base: Path, tmp_path: Path, precision: str) -> None:
    model = make_lora_adapter(
        build_tiny_llama,
        tmp_path / "adapter",
        r=4,
        lora_alpha=8,
        target_modules=["q_proj", "v_proj", "down_proj"],
        use_dora=True,
    )
    reference = _dora_reference(model, build_tiny_llama())
    records = _records(spectrum(llama_base, tmp_path / "adapter", device="cpu", precision=precision))
    assert sorted(records) == sorted(reference)
    for name, expected in reference.items():
        record = records[name]
        assert (record.kind, record.lora_rank) == ("dora", 4)
        observed = np.asarray(record.singular_values)
        assert observed.shape == expected.shape
        if precision == "float64":  # every σ relative
            np.testing.assert_allclose(observed, expected, rtol=SIGMA_RTOL)
        else:  # float32 decomposition: relative to σ₁
            assert np.max(np.abs(observed - expected)) <= SIGMA_RTOL * expected[0]
        # m moved off ‖W + sBA‖_row: ΔW is no longer rank 4
        assert record.ranks["numerical"] > 4


def test_adapter_source_reads_peft_keys(tmp_path: Path) -> None:
    make_lora_adapter(
        build_tiny_llama, tmp_path / "adapter", r=2, lora_alpha=4, target_modules=["q_proj"], use_dora=True
    )
    source = AdapterSource(tmp_path / "adapter")
    name = "model.layers.0.self_attn.q_proj.weight"
    assert sorted(source.modules) == [name, "model.layers.1.self_attn.q_proj.weight"]
    module = source.modules[name]
    assert module.a_key == f"{PEFT_PREFIX}{name.removesuffix('.weight')}.lora_A.weight"
    assert module.magnitude_key is not None and (module.rank, module.alpha, module.scale) == (2, 4.0, 2.0)
    tensors = source.read_tensors(name)
    b, a, magnitude = tensors["lora_B"], tensors["lora_A"], tensors.get("magnitude")
    assert (tuple(b.shape), tuple(a.shape), tuple(magnitude.shape)) == ((32, 2), (2, 32), (32,))


def test_modules_to_save_is_listed_as_skipped(llama_base: Path, tmp_path: Path) -> None:
    make_lora_adapter(
        build_tiny_llama, tmp_path / "adapter", r=2, target_modules=["q_proj"], modules_to_save=["lm_head"]
    )
    result = spectrum(llama_base, tmp_path / "adapter", device="cpu")
    assert len(result.matrices) == 2
    assert [s.reason for s in result.skipped] == ["not a LoRA factor (modules_to_save or unsupported)"]
    assert "lm_head" in result.skipped[0].name


# --- bad adapters -------------------------------------------------------------------------------------------


@pytest.fixture
def adapter_dir(tmp_path: Path) -> Path:
    out = tmp_path / "adapter"
    make_lora_adapter(build_tiny_llama, out, r=2, lora_alpha=4, target_modules=["q_proj"])
    return out


def _edit_config(adapter: Path, **changes: Any) -> None:
    path = adapter / "adapter_config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"peft_type": "FOURIERFT"}, "unsupported PEFT type 'FOURIERFT'"),
        ({"peft_type": "IA3"}, "holds no IA3 module tensors"),
        ({"peft_type": "PREFIX_TUNING"}, "PEFT type 'PREFIX_TUNING' changes no weight"),
        ({"init_lora_weights": "pissa"}, "init_lora_weights='pissa' rewrites the base weights"),
        ({"init_lora_weights": "pissa_niter_4"}, "rewrites the base weights"),
        ({"init_lora_weights": "olora"}, "rewrites the base weights"),
        ({"init_lora_weights": "lora_ga"}, "rewrites the base weights"),
        ({"r": 3}, "has rank 2 but the config says r=3"),
    ],
)
def test_bad_adapter_config(adapter_dir: Path, changes: dict[str, Any], problem: str) -> None:
    _edit_config(adapter_dir, **changes)
    with pytest.raises(InputError, match=problem):
        AdapterSource(adapter_dir)


@pytest.mark.parametrize("init", ["eva", "gaussian", "orthogonal", True, False])
def test_inits_that_keep_the_base_weights_are_accepted(adapter_dir: Path, init: object) -> None:
    _edit_config(adapter_dir, init_lora_weights=init)
    assert len(AdapterSource(adapter_dir).modules) == 2


def test_pickle_adapter_is_refused(adapter_dir: Path) -> None:
    (adapter_dir / "adapter_model.safetensors").rename(adapter_dir / "adapter_model.bin")
    with pytest.raises(InputError, match="pickle checkpoints are never loaded") as excinfo:
        AdapterSource(adapter_dir)
    assert excinfo.value.path == str(adapter_dir / "adapter_model.bin")


def test_adapter_for_another_model(adapter_dir: Path, tmp_path: Path) -> None:
    _tiny_gpt2().save_pretrained(tmp_path / "gpt2")
    with pytest.raises(PairingError, match="modifies no weight of"):
        spectrum(tmp_path / "gpt2", adapter_dir, device="cpu")


def test_adapter_factors_that_do_not_fit_the_base(adapter_dir: Path, tmp_path: Path) -> None:
    build_tiny_llama(hidden_size=64, intermediate_size=128).save_pretrained(tmp_path / "wide")
    with pytest.raises(InputError, match=r"do not fit the base weight \(64, 64\)"):
        spectrum(tmp_path / "wide", adapter_dir, device="cpu")


def test_dora_fan_in_fan_out_gpt2_matches_peft_merge(tmp_path: Path) -> None:
    _tiny_gpt2().save_pretrained(tmp_path / "base")
    model = make_lora_adapter(
        _tiny_gpt2,
        tmp_path / "adapter",
        r=4,
        lora_alpha=16,
        target_modules=["c_attn", "c_fc"],
        fan_in_fan_out=True,
        use_dora=True,
    )
    reference = _dora_reference(model, _tiny_gpt2())
    records = _records(spectrum(tmp_path / "base", tmp_path / "adapter", device="cpu", precision="float64"))
    assert sorted(records) == sorted(reference)
    for name, expected in reference.items():
        assert records[name].kind == "dora"
        np.testing.assert_allclose(records[name].singular_values, expected, rtol=SIGMA_RTOL)
