"""Reading adapters analysed alone (prompt-based peft adapters, deltarank bottleneck adapters) and the QLoRA
marker `quantization.json`: what is listed, and one clear error for each damaged or unsupported input."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from deltarank.errors import InputError
from deltarank.io.naming import Selection
from deltarank.io.quantization import QLORA_NF4, QUANTIZATION_FILE, QuantizationSpec, read_quantization
from deltarank.io.standalone import StandaloneAdapter, is_standalone_adapter
from tests.conftest import build_tiny_llama

BLOCK = "model.layers.0.mlp.bottleneck_adapter"


def _bottleneck(out: Path, tensors: dict[str, torch.Tensor]) -> Path:
    out.mkdir()
    save_file(tensors, str(out / "bottleneck_adapter.safetensors"))
    (out / "bottleneck_config.json").write_text(json.dumps({"size": 4, "nonlinearity": "swish"}))
    return out


def test_bottleneck_lists_down_up_and_product(tmp_path: Path) -> None:
    adapter = StandaloneAdapter(
        _bottleneck(
            tmp_path / "b",
            {
                f"{BLOCK}.down.weight": torch.ones(4, 32),
                f"{BLOCK}.down.bias": torch.ones(4),
                f"{BLOCK}.up.weight": torch.ones(32, 4),
                f"{BLOCK}.up.bias": torch.ones(32),
            },
        )
    )
    listed = [(m.name, m.label, m.kind, m.shape) for m in adapter.matrices]
    assert listed == [
        (f"{BLOCK}.down.weight", "mlp.down", "bottleneck_down", (4, 32)),
        (f"{BLOCK}.up.weight", "mlp.up", "bottleneck_up", (32, 4)),
        (f"{BLOCK}.product", "mlp.product", "bottleneck_product", (32, 32)),
    ]
    assert [m.kind for m in adapter.selected(Selection(exclude="product"))] == [
        "bottleneck_down",
        "bottleneck_up",
    ]


@pytest.mark.parametrize(
    ("tensors", "problem"),
    [
        ({f"{BLOCK}.down.weight": torch.ones(4, 32)}, "lacks its down or up weight"),
        (
            {f"{BLOCK}.down.weight": torch.ones(4, 32), f"{BLOCK}.up.weight": torch.ones(32, 5)},
            "does not fit",
        ),
        ({"something.else": torch.ones(2, 2)}, "holds no bottleneck adapter down/up weights"),
    ],
)
def test_damaged_bottleneck_is_one_input_error(
    tmp_path: Path, tensors: dict[str, torch.Tensor], problem: str
) -> None:
    with pytest.raises(InputError, match=problem):
        StandaloneAdapter(_bottleneck(tmp_path / "b", tensors))


def test_bottleneck_without_its_weights_file(tmp_path: Path) -> None:
    folder = tmp_path / "b"
    folder.mkdir()
    (folder / "bottleneck_config.json").write_text("{}")
    assert is_standalone_adapter(folder)
    with pytest.raises(InputError, match=r"has no bottleneck_adapter\.safetensors"):
        StandaloneAdapter(folder)


def test_prompt_type_without_a_virtual_token_matrix_names_the_type(tmp_path: Path) -> None:
    import peft

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = peft.get_peft_model(
            build_tiny_llama(),
            peft.AdaptionPromptConfig(adapter_len=2, adapter_layers=1, task_type="CAUSAL_LM"),
        )
    model.save_pretrained(str(tmp_path / "adaption"))
    assert is_standalone_adapter(tmp_path / "adaption")
    with pytest.raises(InputError, match="PEFT type 'ADAPTION_PROMPT' is not read"):
        StandaloneAdapter(tmp_path / "adaption")


def test_a_model_directory_is_not_standalone(tiny_model_dir: Path) -> None:
    assert not is_standalone_adapter(tiny_model_dir)


def test_quantization_marker_round_trip_and_run_json_fallback(tmp_path: Path) -> None:
    assert read_quantization(tmp_path) is None
    (tmp_path / "run.json").write_text(json.dumps({"method": "lora"}))
    assert read_quantization(tmp_path) is None
    (tmp_path / "run.json").write_text(json.dumps({"method": "qlora"}))
    assert read_quantization(tmp_path) == QLORA_NF4
    spec = QuantizationSpec(quant_type="fp4", blocksize=128, double_quant=False, dtype="bfloat16")
    spec.write(tmp_path)
    assert read_quantization(tmp_path) == spec  # the marker wins over run.json


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("{", "invalid JSON"),
        (json.dumps({"quant_type": "nf4"}), "expected a JSON object with schema"),
        (
            json.dumps({"schema": "deltarank.quantization/1", "quant_type": "int3"}),
            "quant_type must be one of",
        ),
        (json.dumps({"schema": "deltarank.quantization/1", "double_quant": "yes"}), "double_quant must be"),
        (json.dumps({"schema": "deltarank.quantization/1", "dtype": "float64"}), "dtype must be one of"),
    ],
)
def test_bad_quantization_marker_is_one_input_error(tmp_path: Path, content: str, problem: str) -> None:
    (tmp_path / QUANTIZATION_FILE).write_text(content)
    with pytest.raises(InputError, match=problem):
        read_quantization(tmp_path)
