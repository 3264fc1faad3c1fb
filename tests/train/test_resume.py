"""--resume: a run killed after its step-3 checkpoint, resumed, ends exactly like an uninterrupted run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from deltarank.train.trainer import run_training
from tests.train.tiny_runs import KillAfterStep, Killed, losses, tiny_config


@pytest.mark.parametrize("method", ["full", "lora"])
def test_killed_run_resumes_to_the_same_weights(
    tiny_lm_dir: Path, pc_data: Path, tmp_path: Path, method: str
) -> None:
    def config(out: Path, **extra: Any):  # type: ignore[no-untyped-def]
        # LoRA dropout 0.1 makes the result depend on the restored RNG state as well as the data order
        return tiny_config(
            tiny_lm_dir, pc_data, out, method=method, max_steps=6, save_steps=3, lora_dropout=0.1, **extra
        )

    straight = run_training(config(tmp_path / "straight"))
    with pytest.raises(Killed):
        run_training(config(tmp_path / "killed"), callbacks=[KillAfterStep(4)])
    killed = tmp_path / "killed"
    assert [s for s, _ in losses(killed)] == [1, 2, 3, 4]  # the log ran past the checkpoint
    assert not (killed / "run.json").exists()
    resumed = run_training(config(killed, resume=True))
    assert resumed.run["resumed_from_step"] == 3
    assert losses(killed) == losses(tmp_path / "straight")  # same data order, optimizer and RNG state
    weights = "adapter_model.safetensors" if method == "lora" else "model.safetensors"
    expected, actual = load_file(tmp_path / "straight" / weights), load_file(killed / weights)
    assert set(expected) == set(actual)
    for name in expected:
        assert torch.equal(expected[name], actual[name]), name
    assert resumed.run["tokens_seen"] == straight.run["tokens_seen"]
    assert resumed.run["steps"] == 6
    # only the newest checkpoint keeps optimizer state (keep_optimizer_state=last)
    assert not (killed / "checkpoint-3" / "optimizer.pt").exists()
    assert (killed / "checkpoint-6" / "optimizer.pt").exists()


def test_resume_with_a_changed_config_warns(
    tiny_lm_dir: Path, pc_data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "run"
    run_training(tiny_config(tiny_lm_dir, pc_data, out, max_steps=2, save_steps=1))
    resumed = run_training(
        tiny_config(tiny_lm_dir, pc_data, out, max_steps=3, save_steps=1, lr=5e-4, resume=True)
    )
    assert resumed.run["resumed_from_step"] == 2 and resumed.run["steps"] == 3
    assert "resuming with a changed config: ['max_steps', 'lr']" in caplog.text
