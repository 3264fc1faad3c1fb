"""Checkpoints change nothing in training: the default save interval (every 10% of the steps, the last two kept)
gives the same final weights as a run that saves none, and its checkpoints resume exactly."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from deltarank.train.config import TrainConfig
from deltarank.train.saving import DefaultSaves
from deltarank.train.trainer import run_training


def config(model: Path, data: Path, out: Path, method: str, **extra: object) -> TrainConfig:
    return TrainConfig(model=str(model), data=str(data), method=method, output_dir=str(out), max_steps=6,
                       batch_size=2, seq_len=64, lr=1e-3, seed=0, lora_dropout=0.1, progress="none",
                       **extra)  # type: ignore[arg-type]  # fmt: skip


@pytest.mark.parametrize("method", ["lora", "full"])
def test_default_saves_leave_the_final_weights_unchanged(
    tiny_lm_dir: Path, pc_data: Path, tmp_path: Path, method: str
) -> None:
    saved = run_training(config(tiny_lm_dir, pc_data, tmp_path / "saved", method))
    unsaved = run_training(config(tiny_lm_dir, pc_data, tmp_path / "unsaved", method, save_steps=0))
    assert saved.run["save_interval"] == {"default": True, "steps": 1, "minutes": 10, "keep": 2}
    assert unsaved.run["save_interval"] == {"default": False, "steps": None, "minutes": None, "keep": None}
    # every step but the last saved, the newest two kept; only the newest keeps optimizer state
    assert sorted(p.name for p in (tmp_path / "saved").glob("checkpoint-*")) == [
        "checkpoint-4",
        "checkpoint-5",
    ]
    assert not list((tmp_path / "unsaved").glob("checkpoint-*"))
    assert (tmp_path / "saved" / "checkpoint-5" / "optimizer.pt").is_file()
    assert not (tmp_path / "saved" / "checkpoint-4" / "optimizer.pt").exists()
    name = "adapter_model.safetensors" if method == "lora" else "model.safetensors"
    a, b = load_file(tmp_path / "saved" / name), load_file(tmp_path / "unsaved" / name)
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert saved.run["final_loss"] == unsaved.run["final_loss"]


def test_default_saves_every_tenth_and_after_ten_minutes() -> None:
    saves = DefaultSaves()
    control = SimpleNamespace(should_save=False)
    saves.on_train_begin(None, SimpleNamespace(max_steps=95), control)
    asked = []
    for step in range(1, 96):
        control.should_save = False
        saves.on_step_end(None, SimpleNamespace(global_step=step, max_steps=95), control)
        asked += [step] if control.should_save else []
    assert saves.every == 10 and asked == [10, 20, 30, 40, 50, 60, 70, 80, 90]  # not the last step
    saves.last -= 10 * 60  # ten minutes since the last save
    control.should_save = False
    saves.on_step_end(None, SimpleNamespace(global_step=3, max_steps=95), control)
    assert control.should_save
