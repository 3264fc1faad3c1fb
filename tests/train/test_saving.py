"""Checkpoints change nothing in training: the default save interval (every 10% of the steps, the last two kept)
gives the same final weights as a run that saves none, and its checkpoints resume exactly."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from deltarank.train import saving
from deltarank.train.config import TrainConfig
from deltarank.train.saving import DefaultSaves
from deltarank.train.trainer import run_training


def config(model: Path, data: Path, out: Path, method: str, **extra: object) -> TrainConfig:
    return TrainConfig(model=str(model), data=str(data), method=method, output_dir=str(out), max_steps=6,
                       batch_size=2, seq_len=64, lr=1e-3, seed=0, lora_dropout=0.1, progress="none",
                       **extra)  # type: ignore[arg-type]  # fmt: skip


@pytest.mark.parametrize("method", ["lora", "full"])
def test_default_saves_leave_the_final_weights_unchanged(
    tiny_lm_dir: Path, pc_data: Path, tmp_path: Path, method: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(saving, "SAVE_COST_RATIO", 0.0)  # every 10% mark, however long a save takes
    saved = run_training(config(tiny_lm_dir, pc_data, tmp_path / "saved", method))
    unsaved = run_training(config(tiny_lm_dir, pc_data, tmp_path / "unsaved", method, save_steps=0))
    assert saved.run["save_interval"] == {
        "default": True,
        "steps": 1,
        "minutes": 10,
        "keep": 2,
        "cost_ratio": 0,
    }
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


def steps_asked(saves: DefaultSaves, steps: range, max_steps: int) -> list[int]:
    """The steps at which `saves` asks for a checkpoint (each asked save taken at once)."""
    asked = []
    for step in steps:
        control = SimpleNamespace(should_save=False)
        state = SimpleNamespace(global_step=step, max_steps=max_steps)
        saves.on_step_end(None, state, control)
        if control.should_save:
            asked.append(step)
            saves.on_save(None, state, control)
    return asked


def test_default_saves_every_tenth_and_after_ten_minutes() -> None:
    saves = DefaultSaves(cost_ratio=0)
    saves.on_train_begin(None, SimpleNamespace(max_steps=95, global_step=0), None)
    assert saves.every == 10
    assert steps_asked(saves, range(1, 96), 95) == [10, 20, 30, 40, 50, 60, 70, 80, 90]  # not the last step
    saves.last -= 10 * 60  # ten minutes since the last save, though only 3 steps
    assert steps_asked(saves, range(93, 94), 95) == [93]


def test_a_save_waits_until_training_took_ten_times_the_last_save() -> None:
    """A save that took 5 s: the next one waits for 50 s of training, though 10% of the steps passed."""
    saves = DefaultSaves()
    saves.on_train_begin(None, SimpleNamespace(max_steps=100, global_step=40), None)  # resumed at step 40
    assert steps_asked(saves, range(41, 51), 100) == [50]
    saves.save_seconds = 5.0
    assert steps_asked(saves, range(51, 71), 100) == []  # 20 steps, but not 50 s since
    saves.last -= 50
    assert steps_asked(saves, range(71, 72), 100) == [71]
