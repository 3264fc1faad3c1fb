"""`deltarank spectrum` on adapters whose records are not plain ΔW: QLoRA's quantisation parts, prompt-based and
bottleneck adapters analysed alone, and the one-line refusals (prompt adapter beside a base, VeRA without its
projections, BOFT with several butterfly factors, an unsupported peft type), through click's runner."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner, Result

from deltarank.cli import main
from deltarank.io.quantization import QLORA_NF4
from tests.conftest import build_tiny_llama
from tests.planting import make_lora_adapter

WIDE = {"hidden_size": 64, "intermediate_size": 128}  # bitsandbytes' CPU 4-bit kernels need ≥ 64 inputs


def _run(*args: object) -> Result:
    return CliRunner().invoke(main, ["spectrum", *[str(a) for a in args]])


def _one_error_line(result: Result, code: int = 1) -> str:
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in result.output
    return lines[0]


def _kinds(path: Path) -> list[str]:
    return [m["kind"] for m in json.loads(path.read_text())["matrices"]]


@pytest.fixture(scope="module")
def wide(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The wide tiny Llama (fp32), a LoRA adapter on its q_proj and the same adapter marked as QLoRA."""
    root = tmp_path_factory.mktemp("wide")
    build_tiny_llama(**WIDE).save_pretrained(root / "base")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        make_lora_adapter(lambda: build_tiny_llama(**WIDE), root / "lora", r=2, target_modules=["q_proj"])
        make_lora_adapter(lambda: build_tiny_llama(**WIDE), root / "qlora", r=2, target_modules=["q_proj"])
    QLORA_NF4.write(root / "qlora")
    return {"base": root / "base", "lora": root / "lora", "qlora": root / "qlora"}


def _peft_adapter(config_name: str, out: Path, **kwargs: object) -> Path:
    import peft

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = peft.get_peft_model(build_tiny_llama(), getattr(peft, config_name)(**kwargs))
    model.save_pretrained(str(out))
    return out


def test_qlora_adapter_gets_three_records_per_weight_and_the_flag_turns_them_off(
    wide: dict[str, Path], tmp_path: Path
) -> None:
    pytest.importorskip("bitsandbytes")
    result = _run(wide["base"], wide["qlora"], "-o", tmp_path / "on.json", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert _kinds(tmp_path / "on.json") == ["qlora", "quantization_error", "qlora_total"] * 2
    assert "q_proj:quantization_error" in result.stdout and "q_proj:qlora_total" in result.stdout
    off = _run(
        wide["base"], wide["qlora"], "-o", tmp_path / "off.json", "--no-quantization-error", "--device", "cpu"
    )
    assert off.exit_code == 0, off.output
    assert _kinds(tmp_path / "off.json") == ["qlora", "qlora"]


def test_quantization_error_for_a_plain_lora_adapter_is_one_line(
    wide: dict[str, Path], tmp_path: Path
) -> None:
    plain = _run(wide["base"], wide["lora"], "-o", tmp_path / "plain.json", "--device", "cpu")
    assert plain.exit_code == 0 and _kinds(tmp_path / "plain.json") == ["lora", "lora"]
    line = _one_error_line(
        _run(wide["base"], wide["lora"], "-o", tmp_path / "x.json", "--quantization-error", "--device", "cpu")
    )
    assert "--quantization-error" in line and "not marked as trained on a quantized base" in line
    assert not (tmp_path / "x.json").exists()


@pytest.mark.parametrize(
    ("config_name", "kwargs"),
    [
        ("PromptTuningConfig", {"num_virtual_tokens": 4}),
        ("PrefixTuningConfig", {"num_virtual_tokens": 4}),
        ("PromptEncoderConfig", {"num_virtual_tokens": 4, "encoder_hidden_size": 16}),
    ],
)
def test_prompt_adapter_beside_a_base_names_the_command_and_alone_is_analysed(
    tiny_model_dir: Path, tmp_path: Path, config_name: str, kwargs: dict[str, object]
) -> None:
    adapter = _peft_adapter(config_name, tmp_path / "prompt", task_type="CAUSAL_LM", **kwargs)
    line = _one_error_line(_run(tiny_model_dir, adapter, "-o", tmp_path / "x.json"))
    assert "changes no weight" in line and f"`deltarank spectrum {adapter}`" in line
    result = _run(adapter, "-o", tmp_path / "alone.json", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert set(_kinds(tmp_path / "alone.json")) == {"virtual_tokens"}
    assert "virtual_tokens" in result.stdout and "not deltas" in result.stderr


def test_a_single_argument_that_is_not_such_an_adapter_is_one_line(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    line = _one_error_line(_run(tiny_model_dir, "-o", tmp_path / "x.json"), code=2)  # a usage error
    assert "missing TUNED" in line and "bottleneck adapter directory" in line


def test_bottleneck_adapter_alone_and_beside_a_base(tiny_model_dir: Path, tmp_path: Path) -> None:
    from deltarank.train.bottleneck import BottleneckConfig, add_adapters

    model = add_adapters(build_tiny_llama(), BottleneckConfig(size=4))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "bottleneck_adapter" in name:
                param.add_(0.1)
    model.save_pretrained(tmp_path / "bottleneck")
    alone = _run(tmp_path / "bottleneck", "-o", tmp_path / "alone.json", "--device", "cpu")
    assert alone.exit_code == 0, alone.output
    beside = _run(tiny_model_dir, tmp_path / "bottleneck", "-o", tmp_path / "beside.json", "--device", "cpu")
    assert beside.exit_code == 0, beside.output
    assert f"Warning: BASE {tiny_model_dir} is not needed" in beside.stderr
    assert "is not needed" not in alone.stderr
    assert _kinds(tmp_path / "alone.json") == _kinds(tmp_path / "beside.json")
    assert _kinds(tmp_path / "alone.json")[:3] == ["bottleneck_down", "bottleneck_up", "bottleneck_product"]
    assert "mlp.product" in alone.stdout and "self_attn.down" in alone.stdout


def test_vera_without_projections_is_one_line(tiny_model_dir: Path, tmp_path: Path) -> None:
    adapter = _peft_adapter(
        "VeraConfig", tmp_path / "vera", r=4, target_modules=["q_proj"], save_projection=False
    )
    line = _one_error_line(_run(tiny_model_dir, adapter, "-o", tmp_path / "x.json"))
    assert "save_projection is false" in line


def test_unsupported_peft_type_is_one_line_naming_it(tiny_model_dir: Path, tmp_path: Path) -> None:
    adapter = _peft_adapter(
        "FourierFTConfig", tmp_path / "fourier", n_frequency=16, target_modules=["q_proj"]
    )
    line = _one_error_line(_run(tiny_model_dir, adapter, "-o", tmp_path / "x.json"))
    assert "unsupported PEFT type 'FOURIERFT'" in line


def test_dry_run_lists_the_qlora_parts_and_an_adapter_alone(wide: dict[str, Path], tmp_path: Path) -> None:
    qlora = _run(wide["base"], wide["qlora"], "--dry-run")
    assert qlora.exit_code == 0, qlora.output
    names = [line.split()[0] for line in qlora.stdout.splitlines() if "q_proj.weight" in line]
    assert names[:3] == [
        "model.layers.0.self_attn.q_proj.weight",
        "model.layers.0.self_attn.q_proj.weight:quantization_error",
        "model.layers.0.self_attn.q_proj.weight:qlora_total",
    ]
    prompt = _peft_adapter(
        "PromptTuningConfig", tmp_path / "prompt", task_type="CAUSAL_LM", num_virtual_tokens=4
    )
    alone = _run(prompt, "--dry-run")
    assert alone.exit_code == 0, alone.output
    assert "(PROMPT_TUNING adapter, analysed alone): 1 pairs" in alone.stdout
    assert "virtual_tokens" in alone.stdout and not (tmp_path / "spectrum.json").exists()
