"""`deltarank train` never loses a user's data and never damages a run (#24 findings 1-5 and 9, train part).

Every case is the real command (CliRunner) on a tiny Llama with a real tokenizer and real JSONL data: inputs are
checked before the output is created or replaced, `--force` never removes an input, `--resume` of a finished run
does nothing, a `--resume` of another method, model or data is refused before loading and rewrites nothing, a
failure before the first checkpoint leaves nothing behind, an interrupt keeps a checkpoint and names the command
that continues, and options that do not apply are refused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from transformers import TrainerCallback

import deltarank.train.trainer as trainer_module
from deltarank.cli import main
from deltarank.train.config import TrainConfig
from deltarank.train.methods import method_callbacks
from tests.train.conftest import one_thread, save_tiny_model, write_jsonl

__all__ = ["one_thread"]  # autouse fixture: tiny-model runs on one thread

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama with its tokenizer (read-only for the tests)."""
    return save_tiny_model(tmp_path_factory.mktemp("safety") / "base")


@pytest.fixture
def data(tmp_path: Path) -> Path:
    records = [{"prompt": f"What is {i} + {i}?", "completion": f" {2 * i}"} for i in range(24)]
    return write_jsonl(tmp_path / "pc.jsonl", records)


def train_args(
    model: Path | str, data: Path | str, out: Path, *extra: str, method: str = "lora"
) -> list[str]:
    args = ["train", "--model", str(model), "--data", str(data), "--method", method, "-o", str(out)]
    args += [
        "--batch-size",
        "2",
        "--seq-len",
        "32",
        "--device",
        "cpu",
        "--progress",
        "none",
        "--max-steps",
        "3",
    ]
    return [*args, *(["--lora-r", "2"] if method == "lora" else []), *extra]


def invoke(args: list[str]) -> Result:
    return CliRunner().invoke(main, args)


def one_error_line(result: Result, code: int = 1) -> str:
    """Exit `code`, no traceback, and the one `Error:` line (the last line of stderr)."""
    assert result.exit_code == code, (result.output, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output and "internal error" not in result.output
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("Error: "), result.stderr
    return line


def digest(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under `folder`, by relative path (what a refused command must leave untouched)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# --- finding 1: --force never removes an input; every input is checked first ----------------------------------


def test_force_refuses_an_output_that_contains_the_model_and_data(tmp_path: Path, model_dir: Path) -> None:
    """`-o tinycopy --force` with the model and data inside tinycopy deleted both; now it is refused."""
    copy = tmp_path / "tinycopy"
    shutil.copytree(model_dir, copy / "base")
    write_jsonl(copy / "pc.jsonl", [{"prompt": "1 + 1 =", "completion": " 2"}] * 4)
    before = digest(copy)
    line = one_error_line(invoke(train_args(copy / "base", copy / "pc.jsonl", copy, "--force")))
    assert f"-o {copy}: contains the input {copy / 'base'}" in line
    assert digest(copy) == before


@pytest.mark.parametrize("where", ["model", "inside_model", "data"])
def test_output_that_is_or_lies_inside_an_input_is_refused(
    tmp_path: Path, model_dir: Path, data: Path, where: str
) -> None:
    model = shutil.copytree(model_dir, tmp_path / "m")
    out = {"model": model, "inside_model": model / "run", "data": data}[where]
    before = digest(tmp_path)
    line = one_error_line(invoke(train_args(model, data, out, "--force")))
    assert ("is the input" if where != "inside_model" else "lies inside the input") in line
    assert digest(tmp_path) == before


def test_force_refuses_an_output_holding_the_config_file(tmp_path: Path, model_dir: Path, data: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    config = out / "run.yaml"
    config.write_text("lora_r: 2\n")
    line = one_error_line(invoke([*train_args(model_dir, data, out, "--force"), "--config", str(config)]))
    assert f"contains the input {config}" in line and config.read_text() == "lora_r: 2\n"


def test_missing_local_model_is_no_such_file(
    tmp_path: Path, data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`tinycopy/base` with tinycopy/ here but no base in it is "no such file", not a Hugging Face cache miss."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tinycopy").mkdir()
    line = one_error_line(invoke(train_args("tinycopy/base", data, tmp_path / "out")))
    assert line == "Error: tinycopy/base: model not found: no such file or directory"
    assert not (tmp_path / "out").exists()


def test_model_that_vanishes_after_resolving_is_no_such_file(tmp_path: Path, model_dir: Path) -> None:
    from deltarank.errors import InputError
    from deltarank.train.models import load_model, load_tokenizer, resolve_model

    source = resolve_model(shutil.copytree(model_dir, tmp_path / "m"))
    shutil.rmtree(tmp_path / "m")
    for load in (load_tokenizer, load_model):
        with pytest.raises(InputError, match="no such file or directory"):
            load(source)


# --- finding 4: a bad input found late leaves nothing; a failure before the first checkpoint takes back ---------


def test_wrong_target_modules_leave_no_output(tmp_path: Path, model_dir: Path, data: Path) -> None:
    out = tmp_path / "out"
    line = one_error_line(invoke(train_args(model_dir, data, out, "--target-modules", "qkv")))
    assert "target module 'qkv' is not a linear layer" in line
    assert not out.exists()
    assert invoke(train_args(model_dir, data, out, "--target-modules", "q_proj")).exit_code == 0


@pytest.mark.usefixtures("smollm2_gguf")
def test_qlora_on_a_gguf_leaves_no_output(tmp_path: Path, data: Path) -> None:
    out = tmp_path / "out"
    line = one_error_line(invoke(train_args("smollm2-135m", data, out, method="qlora")))
    assert "a GGUF cannot be quantized again for qlora" in line
    assert not out.exists()


class Fail(TrainerCallback):
    """Raises `error` at the end of optimizer step `step`."""

    def __init__(self, step: int, error: BaseException) -> None:
        self.step, self.error = step, error

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step == self.step:
            raise self.error


@pytest.fixture
def fail_at(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """`fail_at(step, error)`: the next `train` command raises `error` after that step (a crash, or Ctrl-C)."""

    def arm(step: int, error: BaseException) -> None:
        original = trainer_module.method_callbacks
        monkeypatch.setattr(trainer_module, "method_callbacks", lambda c: [*original(c), Fail(step, error)])

    return arm


def test_failure_before_first_checkpoint_removes_what_it_created(
    tmp_path: Path, model_dir: Path, data: Path, fail_at: Any
) -> None:
    fail_at(1, RuntimeError("boom"))
    out = tmp_path / "new" / "out"
    assert invoke(train_args(model_dir, data, out, "--max-steps", "20")).exit_code == 3
    assert not (tmp_path / "new").exists()  # the directories this invocation made are gone


def test_failure_before_first_checkpoint_gives_a_forced_directory_back(
    tmp_path: Path, model_dir: Path, data: Path, fail_at: Any
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("keep me")
    fail_at(1, RuntimeError("boom"))
    assert invoke(train_args(model_dir, data, out, "--max-steps", "20", "--force")).exit_code == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "pc.jsonl"]  # no .out.replaced-* left
    assert [p.name for p in out.iterdir()] == ["old.txt"] and (out / "old.txt").read_text() == "keep me"


# --- findings 2 and 3: resume that cannot damage a run ---------------------------------------------------------


def test_resume_of_a_finished_run_does_nothing(tmp_path: Path, model_dir: Path, data: Path) -> None:
    out = tmp_path / "run"
    assert invoke(train_args(model_dir, data, out, "--save-steps", "1")).exit_code == 0
    before = digest(out)
    for _ in range(2):
        result = invoke([*train_args(model_dir, data, out, "--save-steps", "1"), "--resume"])
        assert result.exit_code == 0, result.output
        assert result.stdout == f"run is finished (3/3 steps); nothing to do: {out}\n"
    assert digest(out) == before  # no extra step, the final weights untouched


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (["--method", "qlora"], "--method was lora, now qlora"),
        (["--lora-r", "4"], "--lora-r was 2, now 4; --lora-alpha was 4, now 8"),
        (["--data", "OTHER"], "--data was DATA, now OTHER"),
        (["--model", "OTHER_MODEL"], "--model was MODEL, now OTHER_MODEL"),
    ],
)
def test_resume_with_another_method_model_or_data_is_refused_before_loading(
    tmp_path: Path, model_dir: Path, data: Path, fail_at: Any, monkeypatch: pytest.MonkeyPatch,
    change: list[str], message: str,
) -> None:  # fmt: skip
    out = tmp_path / "run"
    fail_at(3, RuntimeError("killed"))  # stopped after its checkpoint-2 (a crash keeps what it saved)
    assert invoke(train_args(model_dir, data, out, "--max-steps", "4", "--save-steps", "2")).exit_code == 3
    assert (out / "checkpoint-2" / "trainer_state.json").is_file() and not (out / "run.json").exists()
    before = digest(out)
    other_data = write_jsonl(tmp_path / "other.jsonl", [{"prompt": "a", "completion": " b"}] * 8)
    other_model = shutil.copytree(model_dir, tmp_path / "other_model")
    names = {"OTHER_MODEL": str(other_model), "OTHER": str(other_data)}
    change = [names.get(a, a) for a in change]

    def no_loading(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("loaded a model before refusing the resume")

    monkeypatch.setattr(trainer_module, "resolve_model", no_loading)
    args = train_args(model_dir, data, out, "--max-steps", "4", "--save-steps", "2", "--resume")
    for flag in range(0, len(change), 2):
        args[args.index(change[flag]) + 1] = change[flag + 1]
    line = one_error_line(invoke(args))
    expected = message.replace("OTHER_MODEL", str(other_model)).replace("MODEL", str(model_dir))
    expected = expected.replace("OTHER", str(other_data)).replace("DATA", str(data))
    assert f"--resume: {out} is another run ({expected})" in line
    assert digest(out) == before  # train_config.yaml, the log and the checkpoints untouched


def test_resume_without_save_steps_keeps_the_runs_interval_and_checkpoints(
    tmp_path: Path, model_dir: Path, data: Path, fail_at: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run saved every step, resumed without --save-steps: the default interval would rotate its checkpoints
    away (keeping two); the run's own interval is kept instead."""
    out = tmp_path / "run"
    fail_at(4, RuntimeError("killed"))
    assert invoke(train_args(model_dir, data, out, "--max-steps", "5", "--save-steps", "1")).exit_code == 3
    monkeypatch.undo()
    result = invoke([*train_args(model_dir, data, out, "--max-steps", "5"), "--resume"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.glob("checkpoint-*")) == [f"checkpoint-{i}" for i in range(1, 6)]
    assert json.loads((out / "run.json").read_text())["save_interval"]["steps"] == 1


def test_resume_of_a_run_killed_during_its_first_save_starts_over(
    tmp_path: Path, model_dir: Path, data: Path
) -> None:
    """SIGKILL during the first save leaves train_config.yaml and a checkpoint without trainer_state.json."""
    out = tmp_path / "run"
    args = train_args(model_dir, data, out, "--max-steps", "4")
    out.mkdir()
    config = TrainConfig(model=str(model_dir), data=str(data), method="lora", output_dir=str(out), lora_r=2,
                         batch_size=2, seq_len=32, max_steps=4, device="cpu", progress="none")  # fmt: skip
    config.resolved().save(out / "train_config.yaml")
    (out / "checkpoint-1").mkdir()
    (out / "checkpoint-1" / "adapter_model.safetensors").write_bytes(b"cut short")
    result = invoke([*args, "--resume"])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "run.json").read_text())
    assert record["steps"] == 4 and record["resumed_from_step"] is None
    assert [json.loads(line)["step"] for line in (out / "train_log.jsonl").read_text().splitlines()] == [
        1,
        2,
        3,
        4,
    ]


def test_resume_of_a_directory_without_a_run_is_refused(tmp_path: Path, model_dir: Path, data: Path) -> None:
    line = one_error_line(invoke([*train_args(model_dir, data, tmp_path / "none"), "--resume"]))
    assert line == f"Error: --resume: {tmp_path / 'none'} does not exist (no run to continue)"


# --- finding 5: a default save interval; an interrupt says the command that continues ---------------------------


def test_interrupt_keeps_a_default_checkpoint_and_names_the_command_that_continues(
    tmp_path: Path, model_dir: Path, data: Path, fail_at: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from deltarank.train import saving

    monkeypatch.setattr(saving, "SAVE_COST_RATIO", 0.0)  # every 10% mark, however long a save takes
    out = tmp_path / "run"
    args = train_args(model_dir, data, out, "--max-steps", "20")  # no --save-steps: every 2 steps, last two
    fail_at(7, KeyboardInterrupt())
    result = invoke(args)
    line = one_error_line(result, code=130)
    assert line == (
        "Error: interrupted at step 7/20; checkpoint-6 kept. Continue with: deltarank train "
        f"{shlex.join(args[1:])} --resume"
    )
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-4", "checkpoint-6"]
    monkeypatch.setattr(trainer_module, "method_callbacks", method_callbacks)  # no more interrupts
    continued = invoke(shlex.split(line.split("Continue with: deltarank ")[1]))
    assert continued.exit_code == 0, continued.output
    record = json.loads((out / "run.json").read_text())
    assert (record["resumed_from_step"], record["steps"]) == (6, 20)
    assert record["save_interval"] == {"default": True, "steps": 2, "minutes": 10, "keep": 2, "cost_ratio": 0}
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-16", "checkpoint-18"]


def test_real_ctrl_c_names_the_command_that_continues(tmp_path: Path, model_dir: Path, data: Path) -> None:
    """SIGINT to the real command (each step slowed) after its first default checkpoint: exit 130, the line
    names the checkpoint kept and the command, and that command finishes the run."""
    out = tmp_path / "run"
    args = train_args(model_dir, data, out, "--max-steps", "20")
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.Popen([sys.executable, "-m", "tests.reliability.slowed", "0.3", *args], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip
    deadline = time.monotonic() + 120
    while not (out / "checkpoint-2" / "trainer_state.json").is_file():
        assert proc.poll() is None and time.monotonic() < deadline, "no checkpoint before the end"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    line = stderr.strip().splitlines()[-1]
    match = re.fullmatch(
        r"Error: interrupted at step (\d+)/20; (checkpoint-\d+) kept\. Continue with: (.*)", line
    )
    assert match, line
    assert (out / match[2] / "trainer_state.json").is_file()
    assert match[3] == f"deltarank train {shlex.join(args[1:])} --resume"
    result = invoke(shlex.split(match[3])[1:])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "run.json").read_text())["resumed_from_step"] == int(match[2].split("-")[1])


def test_interrupt_before_the_first_checkpoint_keeps_nothing(
    tmp_path: Path, model_dir: Path, data: Path, fail_at: Any
) -> None:
    out = tmp_path / "run"
    args = train_args(model_dir, data, out, "--max-steps", "20")
    fail_at(1, KeyboardInterrupt())
    line = one_error_line(invoke(args), code=130)
    assert line == (
        f"Error: interrupted at step 1/20; nothing was kept. Start again with: deltarank train {shlex.join(args[1:])}"
    )
    assert not out.exists()


# --- finding 9: options that do not apply, block sizes peft would change, usage errors exit 2 -------------------


@pytest.mark.parametrize(
    ("method", "option", "message"),
    [
        ("full", ["--lora-rank", "8"], "--lora-rank does not apply to --method full (it is for lora, qlora)"),
        (
            "lora",
            ["--oft-block-size", "16"],
            "--oft-block-size does not apply to --method lora (it is for oft)",
        ),
        ("full", ["--target-modules", "mlp"], "--target-modules does not apply to --method full"),
        ("prompt", ["--prefix-projection"], "--prefix-projection does not apply to --method prompt"),
        ("lora", ["--adapter-size", "4"], "--adapter-size does not apply to --method lora"),
    ],
)
def test_option_that_does_not_apply_is_a_usage_error(
    tmp_path: Path, model_dir: Path, data: Path, method: str, option: list[str], message: str
) -> None:
    result = invoke(train_args(model_dir, data, tmp_path / "out", *option, method=method))
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not (tmp_path / "out").exists()


def test_option_at_its_default_for_another_method_is_a_warning(
    tmp_path: Path, model_dir: Path, data: Path, caplog: pytest.LogCaptureFixture
) -> None:
    args = train_args(model_dir, data, tmp_path / "out", "--max-steps", "1", "--lora-r", "16", method="full")
    with caplog.at_level(logging.WARNING):
        result = invoke(args)
    assert result.exit_code == 0, result.output
    assert "--lora-rank does not apply to --method full (it is for lora, qlora); ignored" in caplog.text


def test_oft_block_size_peft_would_change_is_refused(tmp_path: Path, model_dir: Path, data: Path) -> None:
    """peft turned 7 into 8 while the saved configs said 7; the tiny Llama's widths are 32 and 64."""
    line = one_error_line(
        invoke(train_args(model_dir, data, tmp_path / "out", "--oft-block-size", "7", method="oft")), code=2
    )
    assert (
        line
        == "Error: --oft-block-size 7 does not divide the input width of every targeted layer (32, 64); use 4 or 8"
    )
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--lora-r", "0"], "lora_r must be a positive integer"),
        (["--save-steps", "-1"], "save_steps must be 0"),
    ],
)
def test_out_of_range_values_are_usage_errors(
    tmp_path: Path, model_dir: Path, data: Path, option: list[str], message: str
) -> None:
    result = invoke([*train_args(model_dir, data, tmp_path / "out"), *option])
    assert result.exit_code == 2 and message in result.output
