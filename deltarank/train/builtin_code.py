"""Built-in code data: the Python standard library of the running interpreter.

Split: a module is held out when the SHA-256 of its path relative to the standard library (POSIX form, e.g.
`json/decoder.py`) falls in the lowest `TEST_PERCENT` of the hash range, so the split of a file does not
depend on the machine, the Python patch version or the other files present. Files are visited in hash order
(a fixed pseudo-random order), so taking the first N examples gives a spread over the library.

Two forms (both the shape `deltarank.train.formats` reads):
- instruction: one example per function with a docstring and a body; prompt = decorators, signature and
  docstring, completion = the body (HumanEval's framing of code generation).
- raw: `{"text": <module source>}` for continued pretraining.
"""

from __future__ import annotations

import ast
import hashlib
import logging
import os
import sysconfig
from collections.abc import Iterator
from pathlib import Path

logger = logging.getLogger(__name__)

TEST_PERCENT = 10
SKIPPED_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"}
MAX_FUNCTION_LINES = 80  # longer functions do not fit a short training sequence anyway
MAX_FILE_BYTES = 400_000


def stdlib_root() -> Path:
    """The directory of the running interpreter's standard library sources."""
    return Path(sysconfig.get_paths()["stdlib"])


def split_of(relative_path: str) -> str:
    """`test` for about `TEST_PERCENT`% of files chosen by hashing the relative path, else `train`."""
    digest = hashlib.sha256(f"deltarank-code:{relative_path}".encode()).digest()
    return "test" if int.from_bytes(digest[:4], "big") % 100 < TEST_PERCENT else "train"


def source_files(split: str, root: Path | None = None) -> list[tuple[str, Path]]:
    """(relative path, file) of the split's modules, in hash order; test suites and site-packages skipped."""
    base = root or stdlib_root()
    found: list[tuple[str, Path]] = []
    for folder, dirs, files in os.walk(base):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS and not d.startswith("."))
        for name in files:
            if not name.endswith(".py"):
                continue
            path = Path(folder) / name
            relative = path.relative_to(base).as_posix()
            if split_of(relative) == split and path.stat().st_size <= MAX_FILE_BYTES:
                found.append((relative, path))
    found.sort(key=lambda item: hashlib.sha256(item[0].encode()).hexdigest())
    return found


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        logger.debug("skipping unreadable %s", path)
        return None


def raw_records(split: str, root: Path | None = None) -> Iterator[dict[str, str]]:
    """`{"text", "source"}` per module of the split."""
    for relative, path in source_files(split, root):
        text = _read(path)
        if text and text.strip():
            yield {"text": text, "source": relative}


def instruction_records(split: str, root: Path | None = None) -> Iterator[dict[str, str]]:
    """`{"prompt", "completion", "source"}` per documented function of the split's modules."""
    for relative, path in source_files(split, root):
        text = _read(path)
        if not text:
            continue
        try:
            tree = ast.parse(text)
        except (SyntaxError, ValueError):
            logger.debug("skipping %s: not parseable by this Python", relative)
            continue
        lines = text.splitlines()
        for node in ast.walk(tree):
            example = _function_example(node, lines)
            if example is not None:
                yield {**example, "source": f"{relative}:{node.lineno}"}  # type: ignore[attr-defined]


def _function_example(node: ast.AST, lines: list[str]) -> dict[str, str] | None:
    """Split a documented function into (signature + docstring) and body, dedented to column 0."""
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or len(node.body) < 2:
        return None
    if ast.get_docstring(node) is None or node.end_lineno is None:
        return None
    start = min([node.lineno] + [d.lineno for d in node.decorator_list]) - 1
    doc_end = node.body[0].end_lineno
    if doc_end is None or node.end_lineno - start > MAX_FUNCTION_LINES:
        return None
    indent = len(lines[start]) - len(lines[start].lstrip())
    if any(line[:indent].strip() for line in lines[start : node.end_lineno]):
        return None  # a line less indented than the def (a continuation string); skip rather than mangle
    prompt = "\n".join(line[indent:] for line in lines[start:doc_end]) + "\n"
    completion = "\n".join(line[indent:] for line in lines[doc_end : node.end_lineno]) + "\n"
    if not completion.strip():
        return None
    return {"prompt": prompt, "completion": completion}
