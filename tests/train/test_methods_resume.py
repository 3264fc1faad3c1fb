"""--resume for the methods beyond full and LoRA: a run killed after its step-2 checkpoint, resumed, logs the
losses of an uninterrupted run and saves the same weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from deltarank.train.trainer import run_training
from tests.train.tiny_runs import KillAfterStep, Killed, losses, tiny_config

WEIGHTS = {"adapter": "bottleneck_adapter.safetensors"}
SMALL: dict[str, dict[str, Any]] = {"adapter": {"adapter_size": 4}, "prompt": {"virtual_tokens": 4}}


@pytest.mark.parametrize("method", ["adapter", "ia3", "prompt"])
def test_killed_run_resumes(tiny_lm_dir: Path, pc_data: Path, tmp_path: Path, method: str) -> None:
    def config(out: Path, **extra: Any):  # type: ignore[no-untyped-def]
        return tiny_config(
            tiny_lm_dir,
            pc_data,
            out,
            method=method,
            max_steps=4,
            save_steps=2,
            **SMALL.get(method, {}),
            **extra,
        )

    run_training(config(tmp_path / "straight"))
    with pytest.raises(Killed):
        run_training(config(tmp_path / "killed"), callbacks=[KillAfterStep(3)])
    resumed = run_training(config(tmp_path / "killed", resume=True))
    assert resumed.run["resumed_from_step"] == 2
    assert losses(tmp_path / "killed") == losses(tmp_path / "straight")
    weights = WEIGHTS.get(method, "adapter_model.safetensors")
    expected, actual = load_file(tmp_path / "straight" / weights), load_file(tmp_path / "killed" / weights)
    assert set(expected) == set(actual)
    for name in expected:
        assert torch.equal(expected[name], actual[name]), name
