"""A constant learning rate after warm-up (`--lr-scheduler constant_with_warmup`), and every optimizer and schedule
setting of a run in run.json's `optimizer`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from deltarank.train.config import TrainConfig
from deltarank.train.trainer import run_training


def run(model: Path, data: Path, out: Path, **values: Any) -> dict[str, Any]:
    config = TrainConfig(
        model=str(model),
        data=str(data),
        method="full",
        output_dir=str(out),
        max_steps=5,
        batch_size=2,
        seq_len=64,
        lr=1e-3,
        seed=0,
        save_steps=0,
        progress="none",
        **values,
    )
    run_training(config)
    return dict(json.loads((out / "run.json").read_text()))


def logged_rates(out: Path) -> list[float]:
    lines = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    return [e["learning_rate"] for e in lines if "loss" in e]


def test_constant_with_warmup_and_the_recorded_optimizer(
    tiny_lm_dir: Path, pc_data: Path, tmp_path: Path
) -> None:
    """Warm-up over 2 steps (lr 0, then half the peak), then the peak for the rest of the run; run.json records
    every setting of the optimizer the run used."""
    out = tmp_path / "constant"
    record = run(
        tiny_lm_dir,
        pc_data,
        out,
        lr_scheduler="constant_with_warmup",
        warmup=2,
        weight_decay=0.01,
        weight_decay_mode="decoupled",
        max_grad_norm=0.5,
    )
    assert logged_rates(out) == pytest.approx([0.0, 5e-4, 1e-3, 1e-3, 1e-3])
    assert record["optimizer"] == {
        "name": "adamw_torch_fused",
        "class": "AdamW",
        "learning_rate": 1e-3,
        "betas": [0.9, 0.999],
        "epsilon": 1e-8,
        "weight_decay": 0.01,
        "weight_decay_mode": "decoupled",
        "decay_per_step_at_peak": 0.01,
        "torch_weight_decay": pytest.approx(10.0),  # 0.01 / 1e-3: lr_t·10 = (lr_t/1e-3)·0.01
        "decayed_tensors": 16,  # 14 projections, the embedding and the LM head
        "undecayed_tensors": 5,  # the norm weights: 2 per layer and the final one
        "lr_scheduler": "constant_with_warmup",
        "warmup_steps": 2,
        "max_grad_norm": 0.5,
    }
    assert record["config"]["weight_decay_mode"] == "decoupled"


def test_linear_schedule_with_a_warmup_fraction(tiny_lm_dir: Path, pc_data: Path, tmp_path: Path) -> None:
    """The default linear schedule decays after its warm-up (a fraction 0.4 of 5 steps: 2 steps, recorded as
    such); coupled decay 0.1 at lr 1e-3 is 1e-4 per step at the peak."""
    out = tmp_path / "linear"
    record = run(tiny_lm_dir, pc_data, out, warmup=0.4, weight_decay=0.1)
    assert logged_rates(out) == pytest.approx([0.0, 5e-4, 1e-3, 2e-3 / 3, 1e-3 / 3])
    optimizer = record["optimizer"]
    assert (optimizer["lr_scheduler"], optimizer["warmup_steps"], optimizer["max_grad_norm"]) == (
        "linear",
        2,
        1.0,
    )
    assert optimizer["weight_decay_mode"] == "coupled"
    assert optimizer["torch_weight_decay"] == 0.1
    assert optimizer["decay_per_step_at_peak"] == pytest.approx(1e-4)
