"""The per-matrix cache behind `spectrum --resume`: a killed run keeps what it finished.

Each finished matrix is written as one small JSON file in a hidden directory beside the output, under a
fingerprint of the inputs and options (paths, file sizes and modification times). A resumed run with the same
fingerprint reuses those records and gives a result identical to an uninterrupted run; the directory is
removed once the result file is written. A rerun without `--resume` never deletes finished records silently:
`check_cache` refuses it and says how to reuse them (`--resume`) or discard them (`--force`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deltarank.analysis.results.spectrum import MatrixSpectrum
from deltarank.errors import OutputError
from deltarank.io.atomic import json_text, write_atomic, write_json
from deltarank.io.model_ref import local_path

log = logging.getLogger(__name__)
MANIFEST = "manifest.json"


def fingerprint(paths: list[str], options: dict[str, Any]) -> str:
    """A digest of the inputs (each file's path, size and mtime; directories one level deep) and options."""
    parts: list[Any] = [options]
    for raw in paths:
        path = local_path(raw).resolve()  # a repo id: its snapshot, whose path names the commit
        files = sorted(path.iterdir()) if path.is_dir() else [path]
        parts.append([(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files if f.is_file()])
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


class RecordCache:
    """Finished MatrixSpectrum records of one run, keyed by (tuned index, matrix name)."""

    def __init__(self, directory: str | Path, digest: str, resume: bool = True) -> None:
        directory = Path(directory)
        self.directory = directory
        manifest = directory / MANIFEST
        reusable = resume and manifest.is_file() and _read_manifest(manifest).get("fingerprint") == digest
        if resume and not reusable and directory.exists():
            log.warning("--resume: cache in %s does not match these inputs; starting afresh", directory)
        if not reusable:
            shutil.rmtree(directory, ignore_errors=True)
        self.preexisting = reusable  # records of an earlier run: kept when this one stops on a bad input
        self.total: int | None = None  # matrices of the whole run, recorded in the manifest when known
        # The deepest ancestor that exists now: `remove` takes back the (empty) directories `put` creates.
        self._root = next(parent for parent in directory.parents if parent.is_dir())
        self.digest = digest
        self.reused = 0

    def _file(self, tuned_index: int, name: str) -> Path:
        return self.directory / f"{tuned_index}-{hashlib.sha1(name.encode()).hexdigest()[:20]}.json"

    def get(self, tuned_index: int, name: str) -> MatrixSpectrum | None:
        """The cached record, or None."""
        path = self._file(tuned_index, name)
        if not path.is_file():
            return None
        try:
            record = MatrixSpectrum.from_dict(json.loads(path.read_text()))
        except (OSError, ValueError, TypeError, KeyError):
            return None
        self.reused += 1
        return record

    def put(self, tuned_index: int, record: MatrixSpectrum) -> None:
        """Store one finished record (atomically); the directory appears with the first record."""
        if not self.directory.is_dir():
            self.directory.mkdir(parents=True)
            manifest = {"fingerprint": self.digest, "total": self.total}
            write_json(self.directory / MANIFEST, manifest)
        # No fsync: the cache is for a killed run, and 200 fsyncs cost more than the maths of small models.
        path = self._file(tuned_index, record.name)
        write_atomic(path, json_text(record.to_dict(), where=path), durable=False)

    def finished(self) -> int:
        """How many finished records the cache directory holds."""
        if not self.directory.is_dir():
            return 0
        return sum(1 for f in self.directory.glob("*.json") if f.name != MANIFEST)

    def remove(self) -> None:
        """Delete the cache, and its parent and the directories it created while they hold nothing else."""
        shutil.rmtree(self.directory, ignore_errors=True)
        created = [parent for parent in self.directory.parents if self._root in parent.parents]
        for parent in dict.fromkeys([self.directory.parent, *created]):
            with contextlib.suppress(OSError):
                parent.rmdir()


def cache_directory(output: str | Path, rank: int | str = 0) -> Path:
    """The resume cache of a result file: `.<name>.cache/rank<R>` beside it (one per torchrun rank)."""
    path = Path(output)
    return path.parent / f".{path.name}.cache" / f"rank{rank}"


@dataclass(frozen=True)
class CacheState:
    """The finished records an earlier run left in a cache directory."""

    directory: Path
    finished: int
    total: int | None
    matches: bool  # made for these inputs and options (the same fingerprint)

    def describe(self) -> str:
        """`a cache of 12/30 finished matrices for these inputs exists in DIR`."""
        count = f"{self.finished}/{self.total}" if self.total else f"{self.finished}"
        whose = "these inputs" if self.matches else "other inputs or options (or files changed since)"
        return f"a cache of {count} finished matrices for {whose} exists in {self.directory}"


def cache_state(directory: str | Path, digest: str) -> CacheState | None:
    """What an earlier run left in `directory`: None when it holds no finished record."""
    directory = Path(directory)
    if not directory.is_dir():
        return None
    finished = sum(1 for f in directory.glob("*.json") if f.name != MANIFEST)
    if not finished:
        return None
    manifest = _read_manifest(directory / MANIFEST)
    total = manifest.get("total")
    return CacheState(
        directory, finished, total if isinstance(total, int) else None, manifest.get("fingerprint") == digest
    )


def check_cache(directory: str | Path, digest: str, resume: bool, force: bool) -> None:
    """Refuse to discard an earlier run's finished matrices unless `force`; a matching cache with `resume` is fine.

    Raises:
        OutputError: a cache for these inputs without `resume` (add --resume, or --force to start over), or a
            cache for other inputs or options (rerun that command with --resume, or --force to discard it).
    """
    state = cache_state(directory, digest)
    if state is None or force or (resume and state.matches):
        return
    if state.matches:
        raise OutputError(f"{state.describe()}; add --resume to reuse it, or --force to start over")
    raise OutputError(
        f"{state.describe()}; rerun the command that made it with --resume to reuse it, or add --force to "
        "discard it"
    )


def _read_manifest(manifest: Path) -> dict[str, Any]:
    """The manifest's fields ({} when it is missing or unreadable)."""
    try:
        value = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}
