"""Helpers shared by the training tests: a tiny TrainConfig, small settings per method, a simulated kill."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from deltarank.train.config import TrainConfig

PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def tiny_config(model: Path, data: Path | str, out: Path, **overrides: Any) -> TrainConfig:
    values: dict[str, Any] = {
        "model": str(model),
        "data": str(data),
        "method": "full",
        "output_dir": str(out),
        "max_steps": 2,
        "batch_size": 2,
        "seq_len": 64,
        "lr": 1e-3,
        "seed": 0,
        "progress": "none",
    }
    values.update(overrides)
    return TrainConfig(**values)


# Small method settings so that every run takes seconds (the tiny Llama: hidden 32, MLP 64).
SMALL = {
    "lora": {"lora_r": 2},
    "qlora": {"lora_r": 2},
    "loha": {"loha_r": 2, "loha_alpha": 2},
    "lokr": {"lokr_r": 2, "lokr_alpha": 2},
    "adalora": {"adalora_init_r": 4, "adalora_target_r": 2, "max_steps": 3},
    "oft": {"oft_block_size": 8},
    "vera": {"vera_r": 8},
    "prompt": {"virtual_tokens": 4},
    "prefix": {"virtual_tokens": 4, "prefix_projection": True, "encoder_hidden_size": 16},
    "ptuning": {"virtual_tokens": 4, "encoder_hidden_size": 16},
    "adapter": {"adapter_size": 4},
}


class Killed(Exception):
    """Stands in for SIGKILL: training stops abruptly, nothing after this point is written."""


class KillAfterStep(TrainerCallback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
        if state.global_step == self.step:
            raise Killed


def losses(out: Path) -> list[tuple[int, float]]:
    lines = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    return [(e["step"], e["loss"]) for e in lines if "loss" in e]
