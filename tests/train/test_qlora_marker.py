"""`deltarank train --method qlora` marks every adapter it saves (final and checkpoint-<step>) with
quantization.json, and `deltarank spectrum` measures the run's quantisation error against exactly the 4-bit
base the run trained on: the error σ equal those of (the trained model's dequantized Linear4bit weight − the
fp32 weight)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from transformers import TrainerCallback

from deltarank.analysis.engine import spectrum
from deltarank.io.quantization import QLORA_NF4, QUANTIZATION_FILE, read_quantization
from deltarank.train.config import TrainConfig
from deltarank.train.trainer import run_training

pytest.importorskip("bitsandbytes", reason="QLoRA needs bitsandbytes (dev extra)")
Q0 = "model.layers.0.self_attn.q_proj.weight"


class KeepModel(TrainerCallback):
    model: Any = None

    def on_train_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        self.model = model


def test_qlora_run_marks_its_adapters_and_spectrum_reads_its_base(
    wide_lm_dir: Path,
    pc_data: Path,
    tmp_path: Path,
) -> None:
    import bitsandbytes as bnb
    from safetensors.torch import load_file

    out = tmp_path / "qlora"
    keep = KeepModel()
    values: dict[str, Any] = {
        "model": str(wide_lm_dir),
        "data": str(pc_data),
        "method": "qlora",
        "output_dir": str(out),
        "max_steps": 2,
        "save_steps": 1,
        "batch_size": 2,
        "seq_len": 48,
        "seed": 0,
        "progress": "none",
        "lora_r": 2,
        "lr": 1e-2,
    }
    run_training(TrainConfig(**values), callbacks=[keep])
    for directory in (out, out / "checkpoint-1", out / "checkpoint-2"):
        assert (directory / QUANTIZATION_FILE).is_file(), directory
        assert read_quantization(directory) == QLORA_NF4
    layer = keep.model.base_model.model.model.layers[0].self_attn.q_proj.base_layer
    held = bnb.functional.dequantize_4bit(layer.weight.data, layer.weight.quant_state).double()
    fp32 = load_file(str(wide_lm_dir / "model.safetensors"))[Q0].double()
    expected = torch.linalg.svdvals(held - fp32).numpy()
    result = spectrum(wide_lm_dir, out, device="cpu", precision="float64", include=Q0)
    records = {m.kind: m for m in result.matrices}
    assert set(records) == {"qlora", "quantization_error", "qlora_total"}
    observed = np.asarray(records["quantization_error"].singular_values)
    assert float(np.max(np.abs(observed - expected))) <= 1e-5 * float(expected[0])
