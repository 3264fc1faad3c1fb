"""The same tiny 2 × 2 study through `--jobs 2` (local processes) and through Ray (a local instance) gives the
same study.json as one run after another, in everything but wall-clock, tokens-per-second and peak-memory
fields."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from deltarank.errors import DeltarankError
from deltarank.study.design.study_file import load_study
from deltarank.study.run.executors import ProcessExecutor, SequentialExecutor, make_executor
from deltarank.study.run.runner import run_study
from tests.study.tiny_study import comparable, one_thread, tiny_lm, tiny_study, write_study_file

__all__ = ["one_thread", "tiny_lm"]


@pytest.fixture(scope="module")
def study_file(tmp_path_factory: pytest.TempPathFactory, tiny_lm: Path) -> Path:
    folder = tmp_path_factory.mktemp("executors")
    return write_study_file(folder / "tiny.yaml", tiny_study(folder, tiny_lm))


@pytest.fixture(scope="module")
def sequential(study_file: Path) -> dict[str, Any]:
    return run_study(
        load_study(study_file), study_file.parent / "sequential", device="cpu", echo=lambda s: None
    )


def _run_with(executor: Any, study_file: Path, name: str) -> dict[str, Any]:
    try:
        run_study(
            load_study(study_file), study_file.parent / name, device="cpu", executor=executor, echo=print
        )
    finally:
        executor.close()
    return dict(json.loads((study_file.parent / name / "study.json").read_text()))


@pytest.mark.slow
def test_two_local_jobs_give_the_same_study(study_file: Path, sequential: dict[str, Any]) -> None:
    document = _run_with(ProcessExecutor(2), study_file, "jobs")
    assert comparable(document) == comparable(json.loads(json.dumps(sequential)))


@pytest.mark.slow
def test_ray_on_a_local_instance_gives_the_same_study(study_file: Path, sequential: dict[str, Any]) -> None:
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        executor = make_executor("ray", address="local")
        assert type(executor).__name__ == "RayExecutor"
        document = _run_with(executor, study_file, "ray")
    finally:
        ray.shutdown()
    assert comparable(document) == comparable(json.loads(json.dumps(sequential)))


@pytest.mark.slow
def test_a_failing_task_is_raised_by_every_local_executor() -> None:
    tasks = [(int, ("7",)), (int, ("not a number",))]
    with pytest.raises(ValueError, match="not a number"):
        SequentialExecutor().run_wave(tasks)
    pool = ProcessExecutor(2)
    try:
        assert pool.run_wave([(int, ("7",)), (int, ("8",))]) == [7, 8]
        with pytest.raises(ValueError, match="not a number"):
            pool.run_wave(tasks)
    finally:
        pool.close()


def test_bad_executor_options_are_one_line_errors() -> None:
    with pytest.raises(DeltarankError, match="--jobs must be at least 1"):
        make_executor("local", jobs=0)
    with pytest.raises(DeltarankError, match="--executor must be one of local, ray"):
        make_executor("dask")
    assert isinstance(make_executor("local", jobs=1), SequentialExecutor)
