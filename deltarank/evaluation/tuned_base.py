"""The base model a `deltarank train` output is evaluated on: the one its run.json records, checked before any
weights load.

A LoRA adapter applied to another base, or a full fine-tune measured while `--model` names a different model,
gives a plausible number for the wrong thing. `base_for_run` takes the base from the run's `run.json` (or, for
a run stopped before it finished, its `train_config.yaml`) when `--model` is omitted, and refuses a `--model`
that is not that base: the same built-in name, or the same resolved directory and GGUF file. When the recorded
base is not found here (a run copied from another machine), the architectures are compared where both configs
can be read.
"""

from __future__ import annotations

from pathlib import Path

from deltarank.errors import DeltarankError, InputError
from deltarank.io.architecture import read_architecture
from deltarank.io.model_ref import CHECKPOINT, RecordedBase, is_builtin, run_directory
from deltarank.io.model_ref import recorded_base as run_json_base
from deltarank.train.models import ModelSource, resolve_model
from deltarank.train.run_record import RUN_JSON


def recorded_base(tuned: Path) -> tuple[RecordedBase, Path] | None:
    """The base model (`deltarank.io.model_ref.RecordedBase`) of the run that `tuned` is (or is a checkpoint
    of), and the file it came from: run.json of a finished run, else train_config.yaml's `model` (a run stopped
    before it finished); None when neither is there."""
    from deltarank.train.run_dir import CONFIG_NAME, recorded_config

    run = run_directory(tuned)
    if run is not None:
        return run_json_base(run), run / RUN_JSON
    folders = [tuned, tuned.parent] if CHECKPOINT.fullmatch(tuned.name) else [tuned]
    for folder in folders:
        config = recorded_config(folder)
        if config is not None and config.model:
            return RecordedBase(folder, str(config.model)), folder / CONFIG_NAME
    return None


def base_for_run(model: str | None, tuned: Path) -> ModelSource:
    """The base to evaluate `tuned` on: `model` when it is the run's recorded base, the recorded one when
    `model` is None.

    Raises:
        DeltarankError: `model` is not the base the run was trained on (one line naming both).
        InputError: `model` is None and the run records no base, or its recorded base is not found here.
    """
    found = recorded_base(tuned)
    if model is None:
        if found is None:
            raise InputError(tuned, f"no {RUN_JSON} records its base model; give it with --model")
        return _recorded_source(*found)
    given = resolve_model(model)
    if found is None:
        return given  # nothing to compare with; an adapter's keys are still checked when it is loaded
    record, path = found
    if not same_base(given, record, tuned):
        detail = _architecture_difference(given, record)
        raise DeltarankError(
            f"--model {model} is not the base model of {tuned}: {path} records {record.name}{detail}; "
            "omit --model to evaluate on the recorded base"
        )
    return given


def same_base(given: ModelSource, record: RecordedBase, tuned: Path) -> bool:
    """Whether `given` is the base `record` names: the same built-in model, or the same resolved directory and
    GGUF file; when the recorded base is not found here, the same architecture as far as both configs tell
    (`deltarank.io.architecture`)."""
    if is_builtin(record.name) and given.name.lower() == record.name.lower():
        return True
    recorded = _recorded_model(record)
    if recorded is not None:
        return (given.directory.resolve(), given.gguf_file) == (
            recorded.directory.resolve(),
            recorded.gguf_file,
        )
    ours = read_architecture(given.weights)
    theirs = read_architecture(tuned) or read_architecture(tuned.parent)  # a full run keeps its config.json
    return ours is None or theirs is None or not ours.differences(theirs)


def _recorded_model(record: RecordedBase) -> ModelSource | None:
    """The recorded base as found on this machine (`RecordedBase.reference`: a built-in name, the recorded
    directory or GGUF file, else the name as it was given), or None when it is not here."""
    try:
        return resolve_model(record.reference("evaluate"))
    except DeltarankError:
        return None


def _recorded_source(record: RecordedBase, path: Path) -> ModelSource:
    """The recorded base, resolved on this machine.

    Raises:
        InputError: it is not found here.
    """
    found = _recorded_model(record)
    if found is None:
        raise InputError(path, f"its base model {record.name} is not found here; give it with --model")
    return found


def _architecture_difference(given: ModelSource, record: RecordedBase) -> str:
    """` (llama (3 layers, hidden 32) vs llama (2 layers, hidden 32): layers 3 vs 2)` when both configs can be
    read and differ, else ``."""
    recorded = _recorded_model(record)
    if recorded is None:
        return ""
    ours = read_architecture(given.weights)
    theirs = read_architecture(recorded.weights)
    differences = ours.differences(theirs) if ours is not None and theirs is not None else []
    if ours is None or theirs is None or not differences:
        return ""
    return f" ({ours.summary()} vs {theirs.summary()}: {', '.join(differences)})"
