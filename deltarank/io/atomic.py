"""Writing outputs so that a reader never sees a partial one: files and directories, checked before work.

Every result file, figure, adapter directory, training record and cache entry of deltarank goes through here.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from deltarank.errors import OutputError

DIR_MODE = 0o755


def _read_umask() -> int:
    """The process umask, read once at import (reading it means setting it, which is not thread-safe)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


UMASK = _read_umask()
FILE_MODE = 0o666 & ~UMASK


def check_writable(path: str | Path) -> Path:
    """Fail early, before any work, when the file `path` cannot be written.

    Raises:
        OutputError: the parent directory is missing, not a directory, or not writable; `path` is a directory.
    """
    target = Path(path)
    _check_parent(target, "output directory")
    if target.is_dir():
        raise OutputError(f"{target}: is a directory, expected a file path")
    return target


def _check_parent(target: Path, label: str) -> None:
    """The directory `target` goes into must exist and be writable (`label` names it in the error)."""
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"{target}: {label} {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"{target}: {label} {parent} is not writable")


def write_atomic(path: str | Path, text: str | bytes, durable: bool = True) -> None:
    """Write `text` to a temp file beside `path`, then rename over it: readers never see a partial file.

    `durable` also flushes it to the disk before the rename (survives a power cut, not only a killed process).
    """

    def write(tmp: Path) -> None:
        mode = "wb" if isinstance(text, bytes) else "w"
        with open(tmp, mode, encoding=None if isinstance(text, bytes) else "utf-8") as handle:
            handle.write(text)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())

    replace_atomic(path, write)


def json_text(value: Any, indent: int | None = None, where: str | Path = "JSON") -> str:
    """`value` as JSON text (UTF-8 kept, paths as text); NaN and infinity are refused: they are not JSON, and
    a reader of the file would fail or misread them.

    Raises:
        OutputError: a value is NaN or infinite (naming `where`).
    """
    try:
        return json.dumps(value, indent=indent, ensure_ascii=False, allow_nan=False, default=_as_text)
    except ValueError as exc:
        raise OutputError(f"{where}: not written: a value is NaN or infinite ({exc})") from None


def write_json(path: str | Path, value: Any, indent: int = 1) -> None:
    """`value` as JSON (`json_text`, a final newline) at `path`, atomically (`write_atomic`).

    Raises:
        OutputError: a value is NaN or infinite (nothing is written).
    """
    write_atomic(path, json_text(value, indent, path) + "\n")


def write_jsonl(path: str | Path, records: Iterable[Any]) -> None:
    """One JSON line per record (`json_text`) at `path`, atomically.

    Raises:
        OutputError: a value is NaN or infinite (nothing is written).
    """
    write_atomic(path, "".join(json_text(record, None, path) + "\n" for record in records))


def finite(value: Any) -> Any:
    """`value` with every NaN or infinite float replaced by None (null): for records that must be written
    whatever a run measured (run.json, the training log), where refusing would lose the run."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def _as_text(value: Any) -> str:
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def replace_atomic(path: str | Path, write: Callable[[Path], None]) -> None:
    """Let `write` fill a temp file beside `path` (usual permissions), then rename it over `path`.

    For writers that need a file name (matplotlib's savefig, a safetensors writer). On any error, including
    an interrupt, the temp file is removed and `path` is untouched.
    """
    target = check_writable(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        os.chmod(tmp, FILE_MODE)  # mkstemp makes 0600; give the usual permissions
        write(Path(tmp))
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_output_dir(out_dir: str | Path, overwrite: bool) -> Path:
    """Fail before any work when the directory `out_dir` cannot be written.

    Raises:
        OutputError: missing or read-only parent, a file in the way, or a non-empty directory without overwrite.
    """
    target = Path(out_dir)
    _check_parent(target, "parent directory")
    if target.exists() and not target.is_dir():
        raise OutputError(f"{target}: exists and is not a directory")
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        raise OutputError(f"{target}: already exists (use --force to replace it)")
    return target


@contextmanager
def atomic_directory(out_dir: str | Path, overwrite: bool) -> Iterator[Path]:
    """Yield a temporary directory beside `out_dir`; on success it replaces `out_dir`, on failure it is removed."""
    target = check_output_dir(out_dir, overwrite)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        _replace_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _replace_dir(tmp: Path, target: Path) -> None:
    """Rename `tmp` to `target`; an existing `target` is moved aside first and deleted after the swap."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
    try:
        os.replace(tmp, target)
    except BaseException:
        if old is not None:
            os.replace(old, target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    target.chmod(DIR_MODE & ~UMASK)  # mkdtemp makes 0700 directories


def refuse_overlap(output: str | Path, inputs: Iterable[str | Path | None], option: str = "-o") -> None:
    """Refuse an output that is, contains or lies inside one of the command's inputs.

    Called before anything is created, replaced or deleted, so that `--force` can never remove a model, a data
    file or a run the command reads. Inputs that are not paths on disk (a built-in name, a repo id) are skipped.

    Raises:
        OutputError: naming the output and the input it would overwrite.
    """
    out = Path(output).expanduser().resolve()
    for item in inputs:
        if item is None or not Path(item).expanduser().exists():
            continue
        source = Path(item).expanduser().resolve()
        if out == source:
            relation = "is"
        elif out in source.parents:
            relation = "contains"
        elif source in out.parents:
            relation = "lies inside"
        else:
            continue
        raise OutputError(f"{option} {output}: {relation} the input {item}; choose another output path")
