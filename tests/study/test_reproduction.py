"""A study with `reproduce: quick` (the quick preset's form) writes the same summary.json as `deltarank
reproduce` on the same runs, seed and schedule (a tiny model, 6 steps, r = 2)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from deltarank.errors import InputError
from deltarank.reproduce.pipeline import ReproduceConfig, reproduce
from deltarank.study.runner import run_study
from deltarank.study.study_file import parse_study
from tests.study.tiny_study import comparable, one_thread, tiny_lm

__all__ = ["one_thread", "tiny_lm"]

STEPS, R = 6, 2


def study_of(model: Path, **full_changes: Any) -> dict[str, Any]:
    """The tiny reproduction as a study file: reproduce's smoke schedule (6 steps, a checkpoint every 2)."""
    return {
        "name": "tiny-reproduction",
        "reproduce": "quick",
        "base": {
            "model": str(model),
            "data": "builtin:code",
            "max_steps": STEPS,
            "batch_size": 4,
            "seq_len": 128,
            "save_steps": STEPS // 3,
            "seed": 0,
        },
        "runs": [
            {"name": "full", "method": "full", "lr": 5e-5, **full_changes},
            {"name": "lora", "method": "lora", "lora_r": R, "lora_alpha": 2 * R, "lr": 5e-4},
        ],
        "evaluate": {"held_out_sequences": 4, "general_tokens": 8},
    }


def without_paths(summary: dict[str, Any], out: Path) -> Any:
    return comparable(json.loads(json.dumps(summary).replace(str(out), "OUT")))


@pytest.mark.slow
def test_the_study_writes_reproduces_summary(tmp_path: Path, tiny_lm: Path) -> None:
    config = ReproduceConfig(
        out_dir=tmp_path / "reproduce", model=str(tiny_lm), lora_r=R, max_steps=STEPS, device="cpu"
    )
    expected = reproduce(config, echo=lambda s: None)
    study = parse_study(study_of(tiny_lm), "tiny.yaml")
    out = tmp_path / "study"
    run_study(study, out, device="cpu", echo=lambda s: None)
    written = json.loads((out / "summary.json").read_text())
    assert (out / "reproduce.md").is_file() and (out / "report.md").is_file() and (out / "full").is_dir()
    assert without_paths(written, out) == without_paths(expected, config.out_dir)


def test_runs_that_reproduce_would_not_train_are_refused(tiny_lm: Path) -> None:
    with pytest.raises(InputError, match="run full: save_steps is 3; reproduce quick trains with 2"):
        parse_study(study_of(tiny_lm, save_steps=3), "tiny.yaml")
    raw = study_of(tiny_lm)
    raw["runs"] = raw["runs"][:1]
    with pytest.raises(InputError, match="needs two runs named full"):
        parse_study(raw, "tiny.yaml")
