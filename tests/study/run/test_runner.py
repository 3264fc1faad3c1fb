"""run_study on a tiny 2 × 2 grid (method {full, lora} × data_size {4, 8}, 2 steps): every column for every
run, finished runs skipped on a rerun, a run killed mid-training resumed to the same study.json, another study
refused on the same directory."""

from __future__ import annotations

import csv
import json
import multiprocessing
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from transformers import TrainerCallback

from deltarank.errors import OutputError
from deltarank.study.design.study_file import load_study, parse_study
from deltarank.study.report.study_json import flatten
from deltarank.study.run.directory import prepare_study_dir
from deltarank.study.run.planning import plan
from deltarank.study.run.runner import run_study
from deltarank.train.trainer import last_complete_checkpoint
from tests.study.tiny_study import comparable, one_thread, tiny_lm, tiny_study, write_study_file

__all__ = ["one_thread", "tiny_lm"]

MEASURED = (
    "learning.held_out_loss",
    "learning.held_out_loss_change",
    "forgetting.general_loss",
    "forgetting.general_loss_rise",
    "diversity.distinct_per_prompt",
    "cost.trainable_parameters",
    "cost.tokens",
    "cost.steps",
    "cost.stored_bytes",
    "ranks.down_proj.energy_90_median",
    "ranks.q_proj.noise_floor_median",
)


def run_quietly(study_path: Path, out: Path, **kwargs: Any) -> dict[str, Any]:
    lines: list[str] = []
    document = run_study(load_study(study_path), out, device="cpu", echo=lines.append, **kwargs)
    document["echo"] = lines
    return document


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory, tiny_lm: Path) -> tuple[Path, dict[str, Any]]:
    """The tiny study run once, uninterrupted: (study file, study.json)."""
    folder = tmp_path_factory.mktemp("straight")
    path = write_study_file(folder / "tiny.yaml", tiny_study(folder, tiny_lm))
    run_quietly(path, folder / "out")
    return path, json.loads((folder / "out" / "study.json").read_text())


@pytest.mark.slow
def test_a_2x2_study_writes_every_column_for_every_run(straight: tuple[Path, dict[str, Any]]) -> None:
    path, document = straight
    out = path.parent / "out"
    assert document["schema"] == "deltarank.study/1"
    runs = document["runs"]
    assert [r["coordinates"] for r in runs] == [
        {"method": m, "data_size": n} for m in ("full", "lora") for n in (4, 8)
    ]
    columns = [list(flatten(r)) for r in runs]
    assert all(c == columns[0] for c in columns)  # every run has every column
    with (out / "study.csv").open(encoding="utf-8") as handle:
        table = list(csv.DictReader(handle))
    assert [row["name"] for row in table] == [r["name"] for r in runs]
    for row in table:
        for column in MEASURED:
            assert row[column] != "", (row["name"], column)
    for run in runs:
        record = json.loads((out / run["name"] / "run.json").read_text())
        # data_size is the number of training sequences the run saw
        assert record["data"]["train"]["sequences"] == run["coordinates"]["data_size"]
        assert run["cost"]["steps"] == 2 and run["settings"]["data_size"] == run["coordinates"]["data_size"]
        assert (out / run["name"] / "generations.jsonl").is_file()
    full, lora = runs[0], runs[2]
    assert lora["cost"]["trainable_parameters"] < full["cost"]["trainable_parameters"]
    assert lora["settings"]["lora_r"] == 16 and full["settings"]["lora_r"] is None
    # a LoRA delta's rank is at most r = 16 (the 32-wide tiny model's full-FT delta is not bounded so)
    assert all(v["noise_floor_median"] <= 16 for v in lora["ranks"].values())
    assert len(document["bases"]) == 1 and next(iter(document["bases"])).endswith("--train.jsonl")
    assert document["base"] == next(iter(document["bases"].values()))


@pytest.mark.slow
def test_a_rerun_skips_finished_runs_and_rebuilds_the_same_table(
    straight: tuple[Path, dict[str, Any]],
) -> None:
    path, document = straight
    again = run_quietly(path, path.parent / "out")
    assert sum("done already" in line for line in again["echo"]) == 4
    assert comparable(json.loads((path.parent / "out" / "study.json").read_text())) == comparable(document)


class StopAtSecondRunsCheckpoint(TrainerCallback):
    """Holds the second run of the study just after its step-1 checkpoint, so the test can SIGKILL it there."""

    def __init__(self) -> None:
        self.trainings = 0

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.trainings += 1

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.trainings == 2 and state.global_step == 1:
            time.sleep(600)


def _study_until_killed(study_path: str, out: str) -> None:
    import torch

    torch.set_num_threads(1)
    run_study(
        load_study(Path(study_path)),
        Path(out),
        device="cpu",
        echo=lambda s: None,
        callbacks=[StopAtSecondRunsCheckpoint()],
    )


@pytest.mark.slow
def test_a_study_killed_mid_run_resumes_to_the_same_study_json(
    straight: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    """SIGKILL during the second run's training (after its step-1 checkpoint), then the same study again:
    the study.json equals the uninterrupted one in everything but wall-clock, tokens-per-second and
    peak-memory fields (`comparable`)."""
    path, document = straight
    out = tmp_path / "out"
    second = out / document["runs"][1]["name"]
    child = multiprocessing.get_context("spawn").Process(
        target=_study_until_killed, args=(str(path), str(out))
    )
    child.start()
    deadline = time.monotonic() + 300
    while last_complete_checkpoint(second) is None if second.is_dir() else True:
        assert child.is_alive() and time.monotonic() < deadline, "the study did not reach the checkpoint"
        time.sleep(0.05)
    assert child.pid is not None
    os.kill(child.pid, signal.SIGKILL)
    child.join()
    assert not (second / "run.json").exists() and (out / document["runs"][0]["name"] / "run.json").exists()
    resumed = run_quietly(path, out)
    assert any("resuming from step 1" in line for line in resumed["echo"])
    assert json.loads((second / "run.json").read_text())["resumed_from_step"] == 1
    assert comparable(json.loads((out / "study.json").read_text())) == comparable(document)


def test_another_study_is_refused_on_a_study_directory_without_force(tmp_path: Path) -> None:
    base = {"model": "m", "data": "builtin:code", "max_steps": 2}
    one = parse_study({"base": base, "grid": {"method": ["full"]}}, "one.yaml")
    other = parse_study({"base": {**base, "max_steps": 3}, "grid": {"method": ["full"]}}, "two.yaml")
    out = tmp_path / "study"
    prepare_study_dir(one, out, force=False)
    prepare_study_dir(one, out, force=False)  # the same study continues
    (out / "base").mkdir()  # a measurement started (a directory with study.yaml alone takes another study)
    with pytest.raises(OutputError, match="holds a different study \\(use --force"):
        prepare_study_dir(other, out, force=False)
    prepare_study_dir(other, out, force=True)
    assert f"fingerprint {other.fingerprint}" in (out / "study.yaml").read_text()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "file").write_text("x")
    with pytest.raises(OutputError, match="holds no study"):
        prepare_study_dir(one, tmp_path / "other", force=False)


def test_the_plan_counts_steps_tokens_and_time(tmp_path: Path) -> None:
    base = {"model": "smollm2-135m", "data": "builtin:code", "batch_size": 4, "seq_len": 128}
    grid = {"method": ["full"], "max_steps": [10], "data_size": [8]}
    runs = [{"name": "epochs", "method": "lora", "data_size": 10, "epochs": 2}]
    study = parse_study({"base": base, "grid": grid, "runs": runs}, "s.yaml")
    first, second = plan(study, tmp_path / "none")
    assert (first["steps"], first["tokens"], first["state"]) == (10, 10 * 4 * 128, "pending")
    assert first["seconds"] == pytest.approx(10 * 4 * 128 / 140.0)  # SmolLM2's 2-core default
    assert second["steps"] == 6  # ceil(10 / 4) = 3 steps an epoch, 2 epochs


def test_the_plan_estimates_evaluation_from_the_measured_runs(tmp_path: Path, tiny_lm: Path) -> None:
    """measurement.json keeps the seconds a measurement took; `--dry-run` expects each run left to measure to
    take the median of this study's measured runs (of the same model)."""
    from click.testing import CliRunner

    from deltarank.cli import main

    path = write_study_file(tmp_path / "tiny.yaml", tiny_study(tmp_path, tiny_lm))
    out = tmp_path / "out"
    before = CliRunner().invoke(main, ["study", str(path), "-o", str(out), "--dry-run"])
    assert "estimated evaluation time left: not known until a run of this study is measured" in before.output
    run_quietly(path, out)
    study = load_study(path)
    seconds = {
        run.name: json.loads((out / run.name / "measurement.json").read_text())["seconds"]
        for run in study.runs
    }
    assert all(s > 0 for s in seconds.values())
    assert [row["evaluation_seconds"] for row in plan(study, out)] == [0.0] * 4  # all measured
    remeasure = study.runs[0].name
    (out / remeasure / "measurement.json").unlink()
    rows = {row["name"]: row for row in plan(study, out)}
    others = sorted(s for name, s in seconds.items() if name != remeasure)
    assert rows[remeasure]["state"] == "measure" and rows[remeasure]["seconds"] == 0
    assert rows[remeasure]["evaluation_seconds"] == pytest.approx(others[1])  # the median of three
    after = CliRunner().invoke(main, ["study", str(path), "-o", str(out), "--dry-run"])
    assert after.output.splitlines()[-1].startswith(f"estimated evaluation time left: {others[1]:.0f} s")
