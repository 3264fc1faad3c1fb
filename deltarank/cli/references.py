"""BASE omitted: the analysis commands take it from the run.json of the `deltarank train` outputs they compare.

`deltarank spectrum RUN`, `intruders RUN`, `extract RUN` and `similarity RUN_A RUN_B` analyse each run's
weights or adapter against the base model its run.json records (`deltarank.io.model_ref.recorded_base`) and
say in one line which base that was. Runs that record different bases are refused, and so is a recorded base
that is not found on this machine, each with one line saying how to give BASE explicitly.
"""

from __future__ import annotations

from collections.abc import Sequence

from deltarank.errors import DeltarankError, OptionError
from deltarank.io.model_ref import RUN_RECORD, local_path, recorded_base, run_directory

__all__ = ["base_of_runs", "is_run"]


def is_run(spec: str) -> bool:
    """Whether `spec` is a `deltarank train` output (or one of its checkpoints) with a run.json."""
    return run_directory(spec) is not None


def base_of_runs(command: str, runs: Sequence[str], usage: str) -> tuple[str, str]:
    """The base for tuned runs given without BASE, and the line that says which base it is.

    Args:
        command: The command's name (for the messages).
        runs: The TUNED arguments, each a `deltarank train` output directory or a checkpoint of one.
        usage: The command's arguments with BASE, e.g. `BASE TUNED` (for the messages).

    Returns:
        A model reference to the base that works on this machine (a built-in name, a directory or a file),
        and `Base: NAME (recorded in RUN/run.json)`.

    Raises:
        OptionError: an argument is not a train output, so BASE is missing (a usage mistake, exit 2).
        DeltarankError: the runs record different base models.
        InputError: a recorded base is not found here.
    """
    folders = []
    for run in runs:
        folder = run_directory(run)
        if folder is None:
            raise OptionError(
                f"missing BASE: `deltarank {command} {usage}`; BASE may be left out only when every TUNED "
                f"is a `deltarank train` output directory (its {RUN_RECORD} names the base), and {run} is not one"
            )
        folders.append(folder)
    recorded = [recorded_base(folder) for folder in folders]
    references = [item.reference(command) for item in recorded]
    first, reference = recorded[0], references[0]
    for other, other_reference in zip(recorded[1:], references[1:], strict=True):
        if other_reference != reference and local_path(other_reference).resolve() != (
            local_path(reference).resolve()
        ):
            raise DeltarankError(
                f"{first.run} and {other.run} record different base models ({first.name} vs {other.name}); "
                f"give BASE explicitly: deltarank {command} BASE {' '.join(runs)}"
            )
    return reference, f"Base: {first.name} (recorded in {first.run / RUN_RECORD})"
