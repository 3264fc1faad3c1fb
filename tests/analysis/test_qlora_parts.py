"""QLoRA's two perturbations: the quantisation error dequant(W_nf4) − W, checked bit for bit against the weight
a real bitsandbytes `Linear4bit` (transformers' NF4 double-quant loading) holds, and the total change (error +
the adapter's s·B·A), checked against peft's QLoRA model dequantized and merged in float64, minus the original
fp32 weight.

The model is the tiny Llama at hidden 64 / MLP 128 (bitsandbytes' CPU 4-bit kernels need in_features ≥ 64).
The adapter is LoRA r = 4 on every linear layer of the 4-bit model, trained two SGD steps, saved through
`deltarank.train.methods.record_quantization` (which writes quantization.json as `deltarank train` does).
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from deltarank.analysis.engine import spectrum
from deltarank.analysis.engine.loading import load_pair
from deltarank.analysis.engine.plan import plan_run
from deltarank.errors import DeltarankError
from deltarank.io.naming import Selection
from deltarank.io.pairing import QuantizationPair
from deltarank.io.quantization import QUANTIZATION_FILE
from tests.conftest import build_tiny_llama, take_sgd_steps

bnb = pytest.importorskip("bitsandbytes", reason="QLoRA needs bitsandbytes (dev extra)")

SIGMA_TOL = 1e-5  # max |σ − σ_ref| relative to σ₁
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
WIDE = {"hidden_size": 64, "intermediate_size": 128}
Q0 = "model.layers.0.self_attn.q_proj.weight"


@pytest.fixture(scope="module")
def qlora(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The fp32 base directory, the saved QLoRA adapter and, per target weight, the layer's dequantized NF4
    weight, the fp32 weight and the fp32 LoRA delta s·B·A, all read from the trained peft model."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import BitsAndBytesConfig, LlamaForCausalLM

    from deltarank.train.methods import record_quantization
    from deltarank.train.models import keep_nf4_exact

    root = tmp_path_factory.mktemp("qlora")
    original = build_tiny_llama(**WIDE)
    original.save_pretrained(root / "base")
    nf4 = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantized = LlamaForCausalLM.from_pretrained(
            root / "base", quantization_config=nf4, device_map="cpu", dtype=torch.float32
        )
        torch.manual_seed(0)
        model = get_peft_model(
            keep_nf4_exact(prepare_model_for_kbit_training(quantized)),
            LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, init_lora_weights=False),
        )
    take_sgd_steps(model)
    record_quantization(model).save_pretrained(str(root / "adapter"))
    fp32 = dict(original.state_dict())
    layers: dict[str, dict[str, torch.Tensor]] = {}
    for name, module in model.named_modules():
        if not hasattr(module, "lora_A") or not hasattr(module, "base_layer"):
            continue
        weight = module.base_layer.weight
        key = name.removeprefix("base_model.model.") + ".weight"
        delta = module.scaling["default"] * (
            module.lora_B["default"].weight.detach().double()
            @ module.lora_A["default"].weight.detach().double()
        )
        layers[key] = {
            "held": bnb.functional.dequantize_4bit(
                weight.data, weight.quant_state
            ),  # what training computed with
            "fp32": fp32[key].detach(),
            "lora": delta,
        }
    return {"base": root / "base", "adapter": root / "adapter", "layers": layers, "root": root}


def test_training_save_marks_the_adapter(qlora: dict[str, Any]) -> None:
    marker = json.loads((qlora["adapter"] / QUANTIZATION_FILE).read_text())
    assert marker == {
        "schema": "deltarank.quantization/1",
        "quant_type": "nf4",
        "blocksize": 64,
        "double_quant": True,
        "quant_storage": "uint8",
        "dtype": "float32",
    }


def test_quantization_error_is_exactly_the_linear4bit_weight_minus_the_fp32_weight(
    qlora: dict[str, Any],
) -> None:
    base, plans = plan_run(qlora["base"], [qlora["adapter"]], Selection(), quantization_error=True)
    errors = [p for p in plans[0].pairs if isinstance(p, QuantizationPair) and p.kind == "quantization_error"]
    assert len(errors) == 2 * len(TARGETS)
    for pair in errors:
        loaded = load_pair(pair, base, plans[0].source, torch.device("cpu"))
        matrix = loaded.delta(torch.float32).dense()
        layer = qlora["layers"][pair.name.removesuffix(":quantization_error")]
        expected = layer["held"] - layer["fp32"]
        assert torch.equal(matrix, expected), pair.name
        assert float(expected.abs().max()) > 0  # NF4 changes every weight matrix


def test_records_adapter_error_and_total(qlora: dict[str, Any]) -> None:
    result = spectrum(qlora["base"], qlora["adapter"], device="cpu", precision="float64")
    records = {m.name: m for m in result.matrices}
    assert len(records) == 3 * 2 * len(TARGETS)
    for name, layer in qlora["layers"].items():
        held, fp32 = layer["held"].double(), layer["fp32"].double()
        adapter, error, total = (
            records[name],
            records[f"{name}:quantization_error"],
            records[f"{name}:qlora_total"],
        )
        assert (adapter.kind, error.kind, total.kind) == ("qlora", "quantization_error", "qlora_total")
        assert error.module == f"{adapter.module}:quantization_error" and error.layer == adapter.layer
        assert adapter.rank_bound == 4 and error.rank_bound is None
        oracle = {
            "qlora": torch.linalg.svdvals(layer["lora"]),
            "quantization_error": torch.linalg.svdvals(held - fp32),
            "qlora_total": torch.linalg.svdvals(held + layer["lora"] - fp32),  # merged in fp64 − original
        }
        for record in (adapter, error, total):
            expected = oracle[record.kind].numpy()
            observed = np.asarray(record.singular_values)[: len(expected)]
            assert float(np.max(np.abs(observed - expected))) <= SIGMA_TOL * float(expected[0]), record.name
        # the quantisation error is full rank; the adapter's ΔW is rank 4
        assert error.ranks["noise_floor"] == min(error.shape)
        assert adapter.ranks["numerical"] == 4
        assert error.base_norm == pytest.approx(float(torch.linalg.vector_norm(fp32)))


def test_no_quantization_error_keeps_the_adapter_records_only(qlora: dict[str, Any]) -> None:
    result = spectrum(qlora["base"], qlora["adapter"], device="cpu", quantization_error=False)
    assert {m.kind for m in result.matrices} == {"qlora"} and len(result.matrices) == 2 * len(TARGETS)


def test_run_json_marks_an_adapter_saved_before_quantization_json(
    qlora: dict[str, Any], tmp_path: Path
) -> None:
    old = tmp_path / "old_run"
    shutil.copytree(qlora["adapter"], old)
    (old / QUANTIZATION_FILE).unlink()
    plain = spectrum(qlora["base"], old, device="cpu", include=Q0)
    assert [m.kind for m in plain.matrices] == ["lora"]  # nothing says the base was quantized
    (old / "run.json").write_text(json.dumps({"method": "qlora"}))
    marked = spectrum(qlora["base"], old, device="cpu", include=Q0)
    assert [m.kind for m in marked.matrices] == ["qlora", "quantization_error", "qlora_total"]


def test_quantization_error_asked_for_a_plain_lora_adapter_is_refused(
    qlora: dict[str, Any], tmp_path: Path
) -> None:
    plain = tmp_path / "plain"
    shutil.copytree(qlora["adapter"], plain)
    (plain / QUANTIZATION_FILE).unlink()
    with pytest.raises(DeltarankError, match="not marked as trained on a quantized base"):
        spectrum(qlora["base"], plain, device="cpu", quantization_error=True)


def test_a_damaged_quantization_json_is_one_input_error(qlora: dict[str, Any], tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(qlora["adapter"], bad)
    (bad / QUANTIZATION_FILE).write_text(json.dumps({"schema": "deltarank.quantization/1", "blocksize": 0}))
    with pytest.raises(DeltarankError, match="blocksize must be a positive integer"):
        spectrum(qlora["base"], bad, device="cpu")


def test_conv1d_weights_are_quantized_as_their_linear4bit_holds_them(tmp_path: Path) -> None:
    """GPT-2 stores Conv1D weights (in, out); transformers quantizes their transpose. The error record (stored
    orientation) equals the transpose of (Linear4bit's dequantized weight − the fp32 weight) bit for bit."""
    from peft import LoraConfig, get_peft_model
    from transformers import BitsAndBytesConfig, GPT2Config, GPT2LMHeadModel

    from deltarank.io.quantization import QLORA_NF4

    torch.manual_seed(0)
    config = GPT2Config(n_embd=64, n_layer=1, n_head=2, n_positions=32, vocab_size=128)
    GPT2LMHeadModel(config).save_pretrained(tmp_path / "base")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lora = get_peft_model(
            GPT2LMHeadModel.from_pretrained(tmp_path / "base"),
            LoraConfig(r=2, target_modules=["c_attn"], fan_in_fan_out=True, init_lora_weights=False),
        )
        lora.save_pretrained(str(tmp_path / "adapter"))
        quantized = GPT2LMHeadModel.from_pretrained(
            tmp_path / "base",
            quantization_config=BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True
            ),
            device_map="cpu",
            dtype=torch.float32,
        )
    QLORA_NF4.write(tmp_path / "adapter")
    name = "transformer.h.0.attn.c_attn.weight"
    layer = quantized.transformer.h[0].attn.c_attn
    held = bnb.functional.dequantize_4bit(layer.weight.data, layer.weight.quant_state)  # (out, in)
    stored = GPT2LMHeadModel.from_pretrained(tmp_path / "base").state_dict()[name]  # (in, out)
    base, plans = plan_run(tmp_path / "base", [tmp_path / "adapter"], Selection(), quantization_error=True)
    pair = next(p for p in plans[0].pairs if p.name == f"{name}:quantization_error")
    matrix = load_pair(pair, base, plans[0].source, torch.device("cpu")).delta(torch.float32).dense()
    assert matrix.shape == stored.shape == held.mT.shape
    assert torch.equal(matrix, held.mT - stored)
