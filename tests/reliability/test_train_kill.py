"""`deltarank train` killed with SIGKILL resumes from its last complete checkpoint (`--resume`) and loses at most
one save interval, even when the kill cut a checkpoint short.

The run is the real command in a subprocess (`tests.reliability.slowed` sleeps in each training step so the kill
lands mid-run); tests/train/test_resume.py checks that a resumed run ends with the same weights as an
uninterrupted one.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from deltarank.cli import main
from tests.train.conftest import save_tiny_model

REPO = Path(__file__).resolve().parents[2]
MAX_STEPS = 8
SAVE_STEPS = 2
DELAY = 0.4  # seconds of sleep in each training step of the subprocess
START_TIMEOUT = 120.0


def logged_steps(run: Path) -> list[int]:
    """Steps of the loss lines of train_log.jsonl (a line cut short by the kill is ignored)."""
    path = run / "train_log.jsonl"
    steps = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "loss" in entry:
            steps.append(int(entry["step"]))
    return steps


def complete_checkpoints(run: Path) -> list[int]:
    """Steps of the checkpoints whose save finished (trainer_state.json is written last)."""
    return sorted(
        int(p.name.split("-")[1]) for p in run.glob("checkpoint-*") if (p / "trainer_state.json").is_file()
    )


def test_sigkill_then_resume_loses_at_most_one_save_interval(tmp_path: Path) -> None:
    model = save_tiny_model(tmp_path / "model")
    data = tmp_path / "data.jsonl"
    data.write_text(
        "".join(json.dumps({"prompt": f"{i} + {i} =", "completion": f" {2 * i}"}) + "\n" for i in range(40))
    )
    run = tmp_path / "run"
    args = ["train", "--model", str(model), "--data", str(data), "--method", "lora", "--output-dir", str(run)]
    args += ["--max-steps", str(MAX_STEPS), "--save-steps", str(SAVE_STEPS), "--batch-size", "2"]
    args += ["--seq-len", "32", "--device", "cpu", "--lora-r", "4"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.reliability.slowed", str(DELAY), *args],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore", "OMP_WAIT_POLICY": "PASSIVE"},
    )
    deadline = time.monotonic() + START_TIMEOUT
    # Kill once a checkpoint is complete and training has gone past it.
    while not (
        complete_checkpoints(run) and max(logged_steps(run), default=0) > complete_checkpoints(run)[0]
    ):
        if proc.poll() is not None:
            pytest.fail(f"training ended before the kill: {proc.communicate()[1][-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("training reached no checkpoint in time")
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    killed_at = max(logged_steps(run))
    assert killed_at < MAX_STEPS and not (run / "run.json").exists()

    # A kill during a save leaves a checkpoint without trainer_state.json: stand one in for it.
    last = complete_checkpoints(run)[-1]
    partial = run / f"checkpoint-{last + SAVE_STEPS}"
    if not partial.exists():
        partial.mkdir()
        shutil.copy(run / f"checkpoint-{last}" / "adapter_model.safetensors", partial)
    (partial / "trainer_state.json").unlink(missing_ok=True)

    result = CliRunner().invoke(main, [*args, "--resume"])
    assert result.exit_code == 0, result.output
    record = json.loads((run / "run.json").read_text())
    assert record["resumed_from_step"] == last  # the newest complete checkpoint, not the cut-short one
    assert max(killed_at, last + SAVE_STEPS) - last <= SAVE_STEPS  # at most one save interval redone
    assert logged_steps(run) == list(range(1, MAX_STEPS + 1))  # each step once: the log continues cleanly
    assert record["steps"] == MAX_STEPS
    assert (run / "adapter_model.safetensors").is_file()
