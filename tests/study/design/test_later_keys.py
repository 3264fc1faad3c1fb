"""A key added to TrainConfig (weight_decay_mode) leaves the run names of existing studies as they were, and a
run saved before it existed still counts as finished; the new value names a different run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from deltarank.study.design.study_file import parse_study
from deltarank.study.run.run_state import _same_settings

BASE = {"model": "smollm2-135m", "data": "builtin:code", "max_steps": 8, "seed": 0}


def names(**extra: Any) -> list[str]:
    raw = {
        "name": "t",
        "base": {**BASE, **extra},
        "grid": {"method": [{"method": "full", "lr": 5.0e-5}, {"method": "lora", "lora_r": 16}]},
    }
    return [r.name for r in parse_study(raw, "t.yaml").runs]


def test_run_names_are_those_of_before_weight_decay_mode() -> None:
    """The names this study had before weight_decay_mode was added (computed at commit c99188a)."""
    assert names() == ["full-lr5e-05-da6dfd", "lora-r16-2b479b"]
    assert names(weight_decay_mode="coupled") == ["full-lr5e-05-da6dfd", "lora-r16-2b479b"]
    decoupled = names(weight_decay=1e-4, weight_decay_mode="decoupled")
    assert decoupled != names(weight_decay=1e-4)
    assert all(a != b for a, b in zip(decoupled, names(), strict=True))


def test_a_run_saved_before_the_key_existed_is_the_same_run(tmp_path: Path) -> None:
    """A train_config.yaml written before weight_decay_mode (no such key) is the same run as the coupled one,
    and not the same as a decoupled one."""
    base = {**BASE, "weight_decay": 1e-4}
    raw = {"name": "t", "base": base, "grid": {"method": [{"method": "full", "lr": 5.0e-5}]}}
    run = parse_study(raw, "t.yaml").runs[0]
    config = run.train_config(tmp_path).resolved().to_dict()
    del config["weight_decay_mode"]
    (tmp_path / "train_config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    assert _same_settings(run, tmp_path, str(run.config["data"]))
    decoupled_raw = {**raw, "base": {**base, "weight_decay_mode": "decoupled"}}
    other = parse_study(decoupled_raw, "t.yaml").runs[0]
    assert not _same_settings(other, tmp_path, str(other.config["data"]))
