"""A `deltarank train` output directory: the names of its files and its checkpoints.

    RUN/run.json              the run record (written when the run finishes; `deltarank.train.run_record`)
    RUN/train_config.yaml     the resolved training config (`deltarank.train.config_file`)
    RUN/train_log.jsonl       one line per logged step (`deltarank.train.callbacks`)
    RUN/measurement.json      a study's measurement of the run (`deltarank.study.measure.measurement_file`)
    RUN/self_samples.jsonl    the sequences a `builtin:self-samples` run drew (`deltarank.train.builtin_self_samples`)
    RUN/checkpoint-<step>/    intermediate saves; complete once `trainer_state.json` is in (Trainer writes it last)

Train (resume), the study (resume, measuring every checkpoint) and the analysis commands find runs and
checkpoints here, so that they agree on which checkpoint is complete and which step is final.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

RUN_RECORD = "run.json"
TRAIN_CONFIG = "train_config.yaml"
TRAIN_LOG = "train_log.jsonl"
MEASUREMENT = "measurement.json"
SELF_SAMPLES = "self_samples.jsonl"
CHECKPOINT_PREFIX = "checkpoint-"
CHECKPOINT_DONE = "trainer_state.json"  # the last file a checkpoint save writes


@dataclass(frozen=True)
class RunDirectory:
    """One run's output directory (it may not exist yet)."""

    path: Path

    @property
    def record(self) -> Path:
        """RUN/run.json."""
        return self.path / RUN_RECORD

    @property
    def config(self) -> Path:
        """RUN/train_config.yaml."""
        return self.path / TRAIN_CONFIG

    def finished(self) -> bool:
        """Whether the run finished (its run.json is written last)."""
        return self.record.is_file()

    def checkpoints(self) -> list[tuple[int, Path]]:
        """(step, folder) of every `checkpoint-<step>` folder, complete or not, by step."""
        found = []
        if self.path.is_dir():
            for folder in self.path.glob(CHECKPOINT_PREFIX + "*"):
                step = folder.name.removeprefix(CHECKPOINT_PREFIX)
                if folder.is_dir() and step.isdigit():
                    found.append((int(step), folder))
        return sorted(found)

    def complete_checkpoints(self) -> list[tuple[int, Path]]:
        """(step, folder) of the checkpoints whose save finished, by step."""
        return [(s, f) for s, f in self.checkpoints() if (f / CHECKPOINT_DONE).is_file()]

    def incomplete_checkpoints(self) -> list[Path]:
        """The checkpoint folders whose save a kill cut short (the next save of that step overwrites them)."""
        return [f for _, f in self.checkpoints() if not (f / CHECKPOINT_DONE).is_file()]

    def last_complete_checkpoint(self) -> Path | None:
        """The newest complete checkpoint (a newer one cut short mid-save is skipped with a warning)."""
        for folder in self.incomplete_checkpoints():
            logger.warning(
                "skipping %s: its save did not finish (the run was killed while writing it)", folder
            )
        complete = self.complete_checkpoints()
        return complete[-1][1] if complete else None

    def steps(self, final_step: int) -> list[tuple[int, Path]]:
        """(step, weights) of every measurable point of a finished run: the complete intermediate checkpoints
        (before `final_step`) and the final weights (this directory) at `final_step`."""
        return [*((s, f) for s, f in self.complete_checkpoints() if s < final_step), (final_step, self.path)]


def read_train_log(path: Path) -> list[dict[str, Any]]:
    """The entries of a `train_log.jsonl` (written by `deltarank.train.callbacks`), in file order: lines that
    are not JSON objects (a line cut short by a kill) are skipped.

    Raises:
        OSError, UnicodeDecodeError: the file cannot be read.
    """
    entries = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries
