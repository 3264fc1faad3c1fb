"""`deltarank evaluate --measure`: every measurement a study makes, with the study's numbers.

On a tiny Llama and a LoRA (r = 2) trained for 2 steps, `evaluate --measure drift|diversity|accuracy` gives
exactly what `deltarank.study.measure.run_measures` measures on the same models (general-text loss and its rise,
diversity counts and samples, math exact match). Before the measures existed, `evaluate` had no drift and no
diversity, and `--data builtin:math:test` gave a loss, not the accuracy a study reports.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from deltarank.cli import main
from deltarank.evaluation.run import EvalRequest, evaluate
from deltarank.study.design.evaluate_spec import EvaluateSpec
from deltarank.study.measure.run_measures import measure_base, measure_run
from deltarank.train.config import TrainConfig
from deltarank.train.trainer import run_training
from tests.train.conftest import (
    one_thread,  # noqa: F401 (autouse: tiny models run fastest on one thread)
    save_tiny_model,
    write_jsonl,
)

SAMPLING = {"diversity_samples": 3, "temperature": 1.0, "max_new_tokens": 6}


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A tiny model, a LoRA run on it, and the study's measurements of both."""
    root = tmp_path_factory.mktemp("measures")
    sums = [{"prompt": f"What is {i} + {i}?", "completion": f" {2 * i}"} for i in range(12)]
    held = [{"prompt": f"What is {i} + {i}?", "completion": f" {2 * i}"} for i in range(20, 26)]
    paths = {
        "model": save_tiny_model(root / "base"),
        "data": write_jsonl(root / "train.jsonl", sums),
        "held": write_jsonl(root / "held.jsonl", held),
        "prompts": write_jsonl(
            root / "prompts.jsonl", [{"prompt": "def add(a, b):"}, {"prompt": "The quick"}]
        ),
    }
    run = root / "lora"
    run_training(
        TrainConfig(
            model=str(paths["model"]),
            data=str(paths["data"]),
            method="lora",
            output_dir=str(run),
            max_steps=2,
            batch_size=2,
            seq_len=48,
            lr=1e-2,
            lora_r=2,
            seed=0,
            progress="none",
        )
    )
    spec = EvaluateSpec.from_mapping(
        {
            "held_out": str(paths["held"]),
            "general-tokens": 6,
            "diversity_prompts": str(paths["prompts"]),
            "diversity_n": 2,
            "seq_len": 48,
            **SAMPLING,
        }
    )
    base_dir = root / "study-base"
    base = measure_base(str(paths["model"]), str(paths["data"]), spec, base_dir, seed=0, device="cpu")
    tuned = measure_run(run, str(paths["model"]), str(paths["data"]), spec, base, base_dir, 0, "cpu")
    return {**paths, "root": root, "run": run, "base": base, "tuned": tuned, "base_dir": base_dir}


def test_drift_of_the_base_is_the_studys_general_loss(measured: dict[str, Any]) -> None:
    found = evaluate(
        EvalRequest(model=str(measured["model"]), data=None, measure="drift", general_tokens=6, device="cpu")
    )
    study = measured["base"]["forgetting"]
    assert found["task"] == "drift" and found["general_loss"] == study["general_loss"]
    assert (found["general_sequences"], found["general_tokens"]) == (16 * 8, study["general_tokens"])
    assert found["sampling"] == study["sampling"] and found["sampling"]["top_k"] == 0


def test_drift_of_a_run_is_the_studys_forgetting(measured: dict[str, Any]) -> None:
    found = evaluate(
        EvalRequest(model=None, data=None, tuned=str(measured["run"]), measure="drift", general_tokens=6)
    )
    study = measured["tuned"]["forgetting"]
    assert found["general_loss"] == study["general_loss"]  # attached to the kept base or loaded alone: same
    assert found["base_general_loss"] == measured["base"]["forgetting"]["general_loss"]
    assert found["general_loss_rise"] == study["general_loss_rise"]
    assert study["general_loss_rise"] != 0  # the LoRA moved: the rise measures something
    # the same interval as the study's
    assert found["general_loss_rise_ci95"] == study["general_loss_rise_ci95"]
    low, high = study["general_loss_rise_ci95"]
    assert low <= study["general_loss_rise"] <= high


def test_diversity_is_the_studys_with_its_samples_beside_the_result(measured: dict[str, Any]) -> None:
    out = measured["root"] / "diversity" / "result.json"
    out.parent.mkdir()
    args = ["--measure", "diversity", "--data", str(measured["prompts"]), "--limit", "2", "--seed", "0"]
    args += ["--diversity-samples", "3", "--temperature", "1.0", "--max-new-tokens", "6"]
    cli = CliRunner().invoke(main, ["evaluate", "--model", str(measured["model"]), *args, "-o", str(out)])
    assert cli.exit_code == 0, cli.output
    found = json.loads(out.read_text())
    study = measured["base"]["diversity"]
    for key in ("prompts", "samples_per_prompt", "distinct_per_prompt", "distinct_1", "distinct_2"):
        assert found[key] == study[key], key
    generations = out.parent / "generations.jsonl"
    assert found["generations"] == str(generations)
    assert generations.read_text() == (measured["base_dir"] / "generations.jsonl").read_text()
    again = CliRunner().invoke(main, ["evaluate", "--model", str(measured["model"]), *args, "-o", str(out)])
    assert again.exit_code == 1 and "already exists" in again.output  # -o and generations.jsonl both kept


def test_math_accuracy_as_a_study_measures_it(measured: dict[str, Any]) -> None:
    from deltarank.study.measure.run_measures import _accuracy
    from deltarank.train.models import load_model, load_tokenizer, resolve_model

    found = evaluate(
        EvalRequest(str(measured["model"]), "builtin:math:test", measure="accuracy", limit=2, device="cpu")
    )
    source = resolve_model(str(measured["model"]))
    study = _accuracy(load_model(source).eval(), load_tokenizer(source), "builtin:math:test", 2)
    assert found["task"] == "accuracy" and found["metric"] == "exact_match_accuracy"
    assert (
        (found["accuracy"], found["examples"])
        == (study["accuracy"], study["accuracy_examples"])
        == (
            found["correct"] / 2,
            2,
        )
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--measure", "drift", "--data", "builtin:zh-text:test"], "takes no --data"),
        (["--measure", "loss", "--data", "builtin:zh-text:test", "--temperature", "0.5"], "--temperature"),
        (["--measure", "drift", "--diversity-samples", "2"], "--diversity-samples"),
        (["--measure", "accuracy", "--data", "builtin:zh-text:test"], "closed-answer set"),
        (["--measure", "humaneval", "--data", "builtin:zh-text:test"], "builtin:humaneval"),
        (["--measure", "diversity"], "give --data"),
        (["--measure", "diversity", "--data", "x.jsonl", "--top-p", "1.5"], "--top-p"),
    ],
)
def test_usage_mistakes_are_one_line_and_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, ["evaluate", "--model", str(tmp_path), *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_missing_diversity_prompts_fail_before_a_model_loads(tmp_path: Path) -> None:
    args = ["--measure", "diversity", "--data", str(tmp_path / "none.jsonl")]
    result = CliRunner().invoke(main, ["evaluate", "--model", str(tmp_path / "no-model"), *args])
    assert result.exit_code == 1 and "none.jsonl" in result.output and "no-model" not in result.output
