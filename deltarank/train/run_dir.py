"""The run directory of `deltarank train`: checked before anything is written, compared with the run it holds on
`--resume`, and the checkpoint to continue from.

Nothing here loads a model or data: `plan_run_dir` runs first, so that a `--resume` of another method, model
or data is refused before any work, a finished run is left as it is, and a fresh run into a non-empty directory
is refused unless `--force`. `deltarank.train.run_claim` then creates (or replaces) the directory once every
input check has passed.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deltarank.errors import DeltarankError, InputError
from deltarank.io.run_directory import RUN_RECORD, TRAIN_CONFIG, RunDirectory
from deltarank.train.config import TrainConfig
from deltarank.train.config_validation import options_of_method

logger = logging.getLogger(__name__)

CONFIG_NAME = TRAIN_CONFIG
RUN_JSON = RUN_RECORD
# Keys a resumed run must share with the run it continues: what it trains, from what, on what. (The method's
# own keys, such as lora_r, are added per method.) Other changes are allowed with a warning.
IDENTITY_KEYS = ("method", "model", "data", "target_modules", "max_examples", "seq_len")
PATH_KEYS = ("model", "data")


@dataclass(frozen=True)
class RunDirPlan:
    """What `run_training` does with its output directory.

    Attributes:
        checkpoint: The newest complete `checkpoint-<step>` to resume from, or None.
        finished: The run.json of a finished run that `--resume` asks nothing more of (nothing is done).
        start_over: `--resume` of a run stopped before its first complete checkpoint: it starts over.
        inherited: Keys the resumed run keeps from its record because the command left them unset (its
            `save_steps`: the default interval's rotation would otherwise delete checkpoints it kept).
    """

    checkpoint: Path | None = None
    finished: dict[str, Any] | None = None
    start_over: bool = False
    inherited: dict[str, Any] = field(default_factory=dict)


def plan_run_dir(config: TrainConfig) -> RunDirPlan:
    """Check the output directory of a resolved config before anything is loaded or written.

    Raises:
        DeltarankError: a fresh run into a non-empty directory without `--force`, an unwritable location,
            `--resume` of a directory that holds no run, of another method, model or data, or of a checkpoint
            without optimizer state.
    """
    output_dir = Path(config.output_dir)
    if not config.resume:
        prepare_output_dir(output_dir, resume=False, force=config.force)
        return RunDirPlan()
    if not output_dir.is_dir():
        raise DeltarankError(f"--resume: {output_dir} does not exist (no run to continue)")
    previous = check_same_run(output_dir, config)
    finished = finished_run(output_dir, config)
    if finished is not None:
        return RunDirPlan(finished=finished)
    inherited = {}
    if previous is not None and config.save_steps is None and previous.save_steps is not None:
        inherited["save_steps"] = previous.save_steps
    last = last_complete_checkpoint(output_dir)
    if last is None and (output_dir / CONFIG_NAME).is_file() and not (output_dir / RUN_JSON).exists():
        logger.warning(
            "%s: the run stopped before its first checkpoint was complete; starting it over", output_dir
        )
        remove_incomplete_checkpoints(output_dir)
        return RunDirPlan(start_over=True, inherited=inherited)
    return RunDirPlan(checkpoint=prepare_output_dir(output_dir, resume=True), inherited=inherited)


def prepare_output_dir(output_dir: Path, resume: bool, force: bool = False) -> Path | None:
    """Check that the output directory can take a new run, or find the checkpoint to resume from.

    A non-empty directory is refused unless `force` (it is then replaced by `run_claim.OutputClaim` once
    every input check has passed) or `resume`.

    Returns:
        The newest `checkpoint-<step>` when resuming, else None.

    Raises:
        DeltarankError: resuming without a usable checkpoint, or a fresh run into a non-empty directory.
    """
    if resume:
        last = last_complete_checkpoint(output_dir) if output_dir.is_dir() else None
        if last is None:
            raise DeltarankError(f"--resume: no complete checkpoint-<step> directory in {output_dir}")
        if not (Path(last) / "optimizer.pt").is_file() and not any(Path(last).glob("global_step*")):
            raise DeltarankError(f"--resume: {last} holds no optimizer state (keep_optimizer_state=none)")
        return Path(last)
    main_rank = os.environ.get("RANK", "0") == "0"  # other ranks would see rank 0's first files
    if main_rank and output_dir.is_dir() and any(output_dir.iterdir()) and not force:
        raise DeltarankError(
            f"{output_dir}: already exists (use --force to replace it, or --resume to continue its run)"
        )
    existing = next(p for p in (output_dir, *output_dir.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        raise DeltarankError(
            f"cannot create output directory {output_dir}: {existing} is not a writable directory"
        )
    if force and output_dir.is_dir() and not os.access(output_dir.parent, os.W_OK):
        raise DeltarankError(f"--force: cannot replace {output_dir}: {output_dir.parent} is not writable")
    return None


def last_complete_checkpoint(output_dir: Path) -> Path | None:
    """The newest `checkpoint-<step>` whose save finished (`RunDirectory.last_complete_checkpoint`)."""
    return RunDirectory(output_dir).last_complete_checkpoint()


def remove_incomplete_checkpoints(output_dir: Path) -> None:
    """Delete the `checkpoint-<step>` folders whose save never finished (a run killed during its first save)."""
    for folder in RunDirectory(output_dir).incomplete_checkpoints():
        shutil.rmtree(folder)


def recorded_config(output_dir: Path) -> TrainConfig | None:
    """The resolved config a run directory records (train_config.yaml), or None when it has none.

    Raises:
        InputError: the file exists but cannot be read as a config.
    """
    from deltarank.train.config_file import load_train_config

    path = output_dir / CONFIG_NAME
    if not path.is_file():
        return None
    try:
        return load_train_config(path).resolved()
    except DeltarankError as exc:
        raise InputError(path, f"cannot read the run's config to compare with ({exc})") from None


def check_same_run(output_dir: Path, config: TrainConfig) -> TrainConfig | None:
    """Refuse a `--resume` that changes what the run trains (method, model, data or the method's own keys),
    naming each old and new value; other changes are allowed with a warning (keys the command left unset that
    the run keeps, such as `save_steps`, are not named).

    Returns:
        The run's recorded config, or None when the directory holds none.

    Raises:
        DeltarankError: one line listing every changed identity key.
    """
    previous = recorded_config(output_dir)
    if previous is None:
        return None
    old, new = previous.to_dict(), config.to_dict()
    keys = [*IDENTITY_KEYS, *options_of_method(previous, config.method)]
    changed = [k for k in keys if not _same_value(k, old[k], new[k])]
    if changed:
        values = "; ".join(f"{_flag(k)} was {old[k]}, now {new[k]}" for k in changed)
        raise DeltarankError(
            f"--resume: {output_dir} is another run ({values}); resume it with its own settings, or train "
            "into a new -o"
        )
    ignore = ("resume", "force", "progress", *(("save_steps",) if config.save_steps is None else ()))
    others = [k for k in config.changed_keys(previous, ignore=ignore) if k not in keys]
    if others:
        logger.warning("resuming with a changed config: %s (the result is not one uninterrupted run)", others)
    return previous


def finished_run(output_dir: Path, config: TrainConfig) -> dict[str, Any] | None:
    """The run.json of a finished run when `config` asks for no more steps than it trained, else None."""
    import json

    path = output_dir / RUN_JSON
    if not path.is_file():
        return None
    try:
        record = dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError) as exc:
        raise InputError(path, f"cannot read the finished run's record ({type(exc).__name__})") from None
    trained = record.get("config", {})
    steps = int(record.get("steps", 0))
    if config.max_steps is not None and config.max_steps > steps:
        return None  # a longer run asked for: continue from the last checkpoint
    if (
        config.max_steps is None
        and config.epochs is not None
        and config.epochs > (trained.get("epochs") or 0)
    ):
        return None
    return record


def _same_value(key: str, old: Any, new: Any) -> bool:
    """Equal values; for a model or data path also the same file reached by another spelling."""
    if old == new:
        return True
    if key in PATH_KEYS and isinstance(old, str) and isinstance(new, str):
        a, b = Path(old).expanduser(), Path(new).expanduser()
        return a.exists() and b.exists() and a.resolve() == b.resolve()
    return False


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")
