"""`open_checkpoint` picks the reader for every input format and refuses what it must not read."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from transformers import LlamaForCausalLM

from deltarank.errors import InputError
from deltarank.io.gguf_file import GGUFSource
from deltarank.io.safetensors_file import SafetensorsSource, ShardedSafetensorsSource
from deltarank.io.source import open_checkpoint
from tests.planting import save_safetensors, write_llama_gguf


class _Payload:
    """Unpickling this creates a marker file: proof that a loader ran pickle code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[Path]]:
        return (Path.touch, (self.marker,))


def _write_pickle(path: Path, marker: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps({"model.layers.0.self_attn.q_proj.weight": _Payload(marker)}))
    return path


def test_the_pickle_payload_would_run_if_unpickled(tmp_path: Path) -> None:
    """Control for the refusal tests: loading this file really executes code."""
    marker = tmp_path / "ran"
    pickle.loads(_write_pickle(tmp_path / "x.bin", marker).read_bytes())
    assert marker.exists()


@pytest.mark.parametrize("filename", ["pytorch_model.bin", "model.pt", "model.pth", "weights.ckpt"])
def test_pickle_file_is_refused_never_unpickled(tmp_path: Path, filename: str) -> None:
    marker = tmp_path / "ran"
    path = _write_pickle(tmp_path / filename, marker)
    with pytest.raises(
        InputError, match=r"pickle checkpoints are never loaded .*convert it to safetensors"
    ) as excinfo:
        open_checkpoint(path)
    assert excinfo.value.path == str(path)
    assert not marker.exists()


def test_directory_with_only_a_pickle_is_refused_naming_the_file(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    model_dir = tmp_path / "hf"
    path = _write_pickle(model_dir / "pytorch_model.bin", marker)
    (model_dir / "config.json").write_text("{}")
    with pytest.raises(InputError, match="never loaded") as excinfo:
        open_checkpoint(model_dir)
    assert excinfo.value.path == str(path)
    assert not marker.exists()


def test_single_safetensors_file(tmp_path: Path) -> None:
    path = save_safetensors(tmp_path / "m.safetensors", {"w": torch.ones(2, 2)})
    source = open_checkpoint(path)
    assert isinstance(source, SafetensorsSource) and source.path == path


def test_hf_directory_single_file(tiny_model_dir: Path, tiny_model: LlamaForCausalLM) -> None:
    source = open_checkpoint(tiny_model_dir)
    assert isinstance(source, SafetensorsSource)
    assert source.path == tiny_model_dir / "model.safetensors"
    assert sorted(source.names()) == sorted(tiny_model.state_dict())


def test_directory_with_one_other_safetensors_file(tmp_path: Path) -> None:
    path = save_safetensors(tmp_path / "d" / "consolidated.safetensors", {"w": torch.ones(2, 2)})
    assert open_checkpoint(tmp_path / "d").path == path


def test_sharded_directory(tmp_path: Path, tiny_model: LlamaForCausalLM) -> None:
    tiny_model.save_pretrained(tmp_path / "s", max_shard_size="40KB")
    assert isinstance(open_checkpoint(tmp_path / "s"), ShardedSafetensorsSource)


def test_gguf_file_and_directory(tmp_path: Path, tiny_model: LlamaForCausalLM) -> None:
    path = write_llama_gguf(tmp_path / "g" / "tiny.gguf", tiny_model.state_dict(), tiny_model.config)
    assert isinstance(open_checkpoint(path), GGUFSource)
    assert isinstance(open_checkpoint(tmp_path / "g"), GGUFSource)


@pytest.mark.parametrize(
    ("layout", "problem"),
    [
        ("missing", "no such file or directory"),
        ("empty_dir", "directory holds no model weights"),
        ("two_safetensors", "several .safetensors files but no model.safetensors.index.json"),
        ("adapter_as_base", "is a PEFT adapter directory; give it as TUNED"),
    ],
)
def test_unusable_paths(tmp_path: Path, layout: str, problem: str) -> None:
    target = tmp_path / "x"
    if layout == "empty_dir":
        target.mkdir()
    elif layout == "two_safetensors":
        save_safetensors(target / "a.safetensors", {"w": torch.ones(1)})
        save_safetensors(target / "b.safetensors", {"w": torch.ones(1)})
    elif layout == "adapter_as_base":
        target.mkdir()
        (target / "adapter_config.json").write_text('{"peft_type": "LORA", "r": 4}')
    with pytest.raises(InputError, match=problem) as excinfo:
        open_checkpoint(target)
    assert excinfo.value.path == str(target)
