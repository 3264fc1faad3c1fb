"""Creating a run's output directory so that a failed command leaves nothing behind and loses nothing.

`OutputClaim.create()` runs once every input check has passed. Until the run's first checkpoint is complete
(`commit()`), what this invocation created can be taken back (`rollback()`): a directory it made is removed, files
it added to an existing one are removed, and a directory that `--force` replaces is only moved aside (a hidden
sibling `.<name>.replaced-<pid>`) and put back. Nothing that existed before the command is removed before the
commit. Only the main process of a multi-process launch touches the directory.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from deltarank.errors import DeltarankError

logger = logging.getLogger(__name__)


def is_main_rank() -> bool:
    """Whether this is the main process (or the only one) of a launch."""
    return os.environ.get("RANK", "0") == "0"


class OutputClaim:
    """The output directory of one `deltarank train` invocation, created after every check.

    Args:
        output_dir: The run directory.
        replace: Replace an existing directory (`--force`): moved aside until `commit()`, then deleted.
    """

    def __init__(self, output_dir: Path, replace: bool = False) -> None:
        self.output_dir = output_dir
        self.replace = replace
        self.replaced: Path | None = None
        self.created_root: Path | None = None  # the outermost directory this invocation made
        self.kept: set[str] = set()  # entries of an existing directory that are not ours
        self.committed = False

    def create(self) -> None:
        """Create (or replace) the directory.

        Raises:
            DeltarankError: the directory cannot be created or moved aside.
        """
        out = self.output_dir
        try:
            if not is_main_rank():
                out.mkdir(parents=True, exist_ok=True)
                return
            if self.replace and out.is_dir() and any(out.iterdir()):
                self.replaced = out.parent / f".{out.name}.replaced-{os.getpid()}"
                out.rename(self.replaced)
                logger.info("--force: %s moved aside to %s until the first checkpoint", out, self.replaced)
            missing = [p for p in (out, *out.parents) if not p.exists()]
            self.created_root = missing[-1] if missing else None
            self.kept = set(os.listdir(out)) if out.is_dir() else set()
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self._restore()
            raise DeltarankError(f"cannot create output directory {out}: {exc.strerror or exc}") from exc

    def commit(self) -> None:
        """The run has kept work (a complete checkpoint, or its final weights): the replaced directory goes."""
        if self.committed:
            return
        self.committed = True
        if self.replaced is not None:
            shutil.rmtree(self.replaced, ignore_errors=True)
            self.replaced = None

    def rollback(self) -> None:
        """Undo what this invocation created (before any commit): the command failed and kept nothing."""
        if self.committed or not is_main_rank():
            return
        try:
            if self.created_root is not None:
                shutil.rmtree(self.created_root, ignore_errors=True)
            elif self.output_dir.is_dir():
                for name in set(os.listdir(self.output_dir)) - self.kept:
                    path = self.output_dir / name
                    if path.is_dir() and not path.is_symlink():
                        shutil.rmtree(path, ignore_errors=True)
                    else:
                        path.unlink(missing_ok=True)
        finally:
            self._restore()

    def _restore(self) -> None:
        """Put a directory that `--force` moved aside back in place."""
        if self.replaced is None:
            return
        out = self.output_dir
        if out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        if not out.exists():
            self.replaced.rename(out)
            self.replaced = None
        else:
            logger.warning("could not put %s back: it is at %s", out, self.replaced)
