"""RunDirectory: which checkpoints of a run are complete, and which steps a finished run has to measure."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from deltarank.io.run_directory import RunDirectory


def checkpoint(run: Path, step: int, complete: bool = True) -> Path:
    folder = run / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"")
    if complete:
        (folder / "trainer_state.json").write_text("{}")
    return folder


def test_a_checkpoint_is_complete_once_its_trainer_state_is_written(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run = RunDirectory(tmp_path / "run")
    assert run.checkpoints() == [] and run.last_complete_checkpoint() is None  # not created yet
    first, second = checkpoint(run.path, 10), checkpoint(run.path, 20)
    cut = checkpoint(run.path, 30, complete=False)  # a kill during its save
    (run.path / "checkpoint-notes").mkdir()  # not a checkpoint
    assert [s for s, _ in run.checkpoints()] == [10, 20, 30]
    assert run.complete_checkpoints() == [(10, first), (20, second)]
    assert run.incomplete_checkpoints() == [cut]
    with caplog.at_level(logging.WARNING):
        assert run.last_complete_checkpoint() == second
    assert "checkpoint-30: its save did not finish" in caplog.text


def test_the_steps_of_a_finished_run_are_its_complete_checkpoints_then_its_final_weights(
    tmp_path: Path,
) -> None:
    run = RunDirectory(tmp_path)
    checkpoint(tmp_path, 2)
    checkpoint(tmp_path, 4, complete=False)
    checkpoint(tmp_path, 6)  # the final step's checkpoint: the run directory's own weights stand for it
    assert run.steps(6) == [(2, tmp_path / "checkpoint-2"), (6, tmp_path)]
    assert not run.finished()
    run.record.write_text("{}")
    assert run.finished() and run.record.name == "run.json" and run.config.name == "train_config.yaml"
