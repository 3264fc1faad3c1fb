"""User-facing errors: each becomes one `Error: ...` line and a non-zero exit in the CLI."""

from __future__ import annotations

from pathlib import Path


class DeltarankError(Exception):
    """A problem the user can fix (bad input, bad option); never shown with a traceback."""


class OptionError(DeltarankError):
    """A usage mistake: an option value or a combination of options that cannot apply (`--top-k` without the
    randomized solver, `--lora-rank` and `--energy` together). The CLI exits 2 for it, like click's own usage
    errors; the library raises it like any other DeltarankError."""


class InputError(DeltarankError):
    """A checkpoint, adapter, data or config file that cannot be used.

    Args:
        path: The offending file or directory.
        problem: What is wrong with it, in a few words.
    """

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class PairingError(DeltarankError):
    """Base and tuned checkpoints cannot be paired (no common tensors, different architectures)."""


class OutputError(DeltarankError):
    """An output path that cannot be written (missing or read-only directory)."""
