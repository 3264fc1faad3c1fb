"""Where a run of a study stands in the study directory: done (trained and measured with the current
`evaluate:`), trained but not measured, stopped at a checkpoint, or pending; used by `run_study` and by
`--dry-run`'s plan."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from deltarank.errors import DeltarankError
from deltarank.io.run_directory import RunDirectory
from deltarank.study.design.held_out_split import training_data
from deltarank.study.design.study import RunSpec, Study, identity_values
from deltarank.study.measure.measurement_file import cached_measurement
from deltarank.study.run.recommendation import recommended_values


@dataclass(frozen=True)
class RunStatus:
    """Where a run stands in the study directory: done, training stopped at a checkpoint, or pending."""

    state: str  # "done", "measure" (trained, not measured), "resume", "pending"
    step: int | None = None


def run_status(study: Study, run: RunSpec, out_dir: Path) -> RunStatus:
    """done (trained and measured with this `evaluate:`), measure, resume (a checkpoint) or pending."""
    from deltarank.train.trainer import last_complete_checkpoint

    run_dir = out_dir / run.name
    trains_on = training_data(study, str(run.config["data"]), out_dir)
    if RunDirectory(run_dir).finished() and _same_settings(run, run_dir, trains_on):
        done = cached_measurement(run_dir, study.evaluate.for_run(run.name)) is not None
        return RunStatus("done" if done else "measure")
    checkpoint = last_complete_checkpoint(run_dir) if run_dir.is_dir() else None
    if checkpoint is not None and _same_settings(run, run_dir, trains_on):
        return RunStatus("resume", int(checkpoint.name.rsplit("-", 1)[1]))
    return RunStatus("pending")


def _same_settings(run: RunSpec, run_dir: Path, trains_on: str) -> bool:
    """Whether the run directory's saved train_config.yaml is this run's (a changed explicit run is not);
    `trains_on` is the data it trains on (a held-out split's train part stands for the run's data). A
    `recommend:` run is the same only when its recommendation of the current spec is in the study directory and
    it trained with its ranks."""
    from deltarank.train.config_file import load_train_config

    path = RunDirectory(run_dir).config
    if not path.is_file():
        return False
    try:
        saved = identity_values(load_train_config(path).resolved().to_dict())
    except DeltarankError:
        return False
    if run.parent is not None:
        saved["model"] = f"run:{run.parent}"
    recommended = None
    if run.recommend is not None:
        recommended = recommended_values(run_dir.parent, run)
        if recommended is None:
            return False
        saved["recommend"] = dict(run.recommend)  # the directory of this spec holds the ranks it trained
    if (
        trains_on != run.config["data"]
    ):  # a held-out part is split off: a run trained on it all is not this run
        if saved.get("data") != trains_on:
            return False
        saved["data"] = run.config["data"]
    return bool(saved == run.identity(recommended))
