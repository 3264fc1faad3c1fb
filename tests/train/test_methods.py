"""Every training method of `deltarank train --method` on the tiny Llama: it trains, its output loads back
(peft's `PeftModel.from_pretrained`, or deltarank's loader for bottleneck adapters) and gives the logits of the
trained model in memory; run.json prices it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, TrainerCallback

from deltarank.train.config import DEFAULT_LR, TrainConfig
from deltarank.train.config_validation import METHODS, PROMPT_METHODS
from deltarank.train.methods import quantization_config
from deltarank.train.models import keep_nf4_exact, load_model, resolve_model
from deltarank.train.trainer import run_training
from tests.train.tiny_runs import SMALL

INPUT = torch.tensor([[0, 5, 17, 42, 99, 7, 3, 250]])


class KeepModel(TrainerCallback):
    """Keeps the trained model (the object the Trainer trained) at the end of training."""

    model: Any = None

    def on_train_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        self.model = model


def logits(model: Any) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(input_ids=INPUT, attention_mask=torch.ones_like(INPUT)).logits.float()


def load_back(config: TrainConfig, out: Path) -> Any:
    """The saved run loaded as a user would: the full model, or the base plus the adapter."""
    if config.method == "full":
        return AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    base = keep_nf4_exact(load_model(resolve_model(config.model), quantization_config(config.method)))
    if config.method == "adapter":
        from deltarank.train.bottleneck import load_adapter

        return load_adapter(base, out)
    from peft import PeftModel

    return PeftModel.from_pretrained(base, out)


@pytest.mark.parametrize("method", METHODS)
def test_method_trains_saves_and_loads_back(
    method: str, tiny_lm_dir: Path, wide_lm_dir: Path, pc_data: Path, tmp_path: Path
) -> None:
    out = tmp_path / method
    if method == "qlora":
        tiny_lm_dir = wide_lm_dir
    values: dict[str, Any] = {
        "model": str(tiny_lm_dir),
        "data": str(pc_data),
        "method": method,
        "output_dir": str(out),
        "max_steps": 2,
        "batch_size": 2,
        "seq_len": 48,
        "seed": 0,
        "progress": "none",
        **SMALL.get(method, {}),
    }
    if method not in PROMPT_METHODS:
        values["lr"] = 1e-2  # large enough that two steps move the weights visibly
    keep = KeepModel()
    result = run_training(TrainConfig(**values), callbacks=[keep])
    config = TrainConfig(**values).resolved()
    trained = logits(keep.model)
    loaded = logits(load_back(config, out))
    torch.testing.assert_close(loaded, trained, rtol=1e-5, atol=1e-5)
    if method not in PROMPT_METHODS:  # the comparison is not vacuous: training changed the model
        base = logits(
            keep_nf4_exact(load_model(resolve_model(str(tiny_lm_dir)), quantization_config(config.method)))
        )
        assert (trained - base).abs().max() > 1e-4

    run = json.loads((out / "run.json").read_text())
    assert run["method"] == method
    params = run["parameters"]
    assert 0 < params["trainable"] <= params["total"]
    assert params["trainable_share_of_base"] == pytest.approx(params["trainable"] / params["base"])
    if method == "full":
        assert params["trainable_share_of_base"] == 1.0
    else:
        assert params["trainable_share_of_base"] < 0.5
    assert run["stored_bytes"] > 0
    assert run["config"]["lr"] == values.get("lr", DEFAULT_LR[method])
    assert result.run["steps"] == values["max_steps"]


def test_every_method_has_a_default_learning_rate() -> None:
    assert set(DEFAULT_LR) == set(METHODS)
