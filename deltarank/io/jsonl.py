"""Reading JSON-lines files: the one reader beside the one writer (`deltarank.io.atomic.write_jsonl`).

Every JSONL input of deltarank (training data, completions, diversity prompts, the general-text and
self-sample sets) is read here, so that a file that cannot be read, a line that is not UTF-8, not JSON or not a
JSON object, fails the same way everywhere: an InputError naming the file and the line. What a record must hold
is each caller's own check, on the (line number, record) pairs this module yields.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from deltarank.errors import InputError

DETAIL_CHARS = 80  # of a parser's message quoted in an error (a hostile line cannot flood the error line)


def iter_jsonl(
    path: str | Path, what: str, max_chars: int | None = None
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, record) for each non-blank line of a JSONL file, in file order, reading lazily.

    Lines are split at newlines only (a JSON string may hold U+2028 or U+0085, which `str.splitlines` would
    split at), numbered from 1 counting blank lines, and decoded as UTF-8 one by one. A caller that stops early
    leaves the rest of the file unread and unchecked.

    Args:
        path: The JSONL file.
        what: The file in a few words, for the error of an unreadable file ("the completions file").
        max_chars: Refuse a longer line before parsing it (for files from untrusted sources); None: no limit.

    Yields:
        (line number, record): the record is a JSON object (a dict).

    Raises:
        InputError: the file cannot be opened or read (`cannot read {what} (...)`), or a line is not UTF-8,
            longer than `max_chars`, not JSON or not a JSON object (`line N: ...`).
    """
    try:
        with open(path, "rb") as handle:
            for number, raw in enumerate(handle, start=1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError:
                    raise InputError(path, f"line {number}: not UTF-8 text") from None
                if not line.strip():
                    continue
                if max_chars is not None and len(line.rstrip("\r\n")) > max_chars:
                    raise InputError(path, f"line {number}: longer than {max_chars} characters")
                yield number, _record(path, number, line)
    except OSError as exc:  # opening or reading (InputError is no OSError: a line's error passes through)
        raise InputError(path, f"cannot read {what} ({_reason(exc)})") from None


def _record(path: str | Path, number: int, line: str) -> dict[str, Any]:
    """The JSON object on line `number`, else an InputError naming the line."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise InputError(path, f"line {number}: invalid JSON ({exc.msg})") from None
    except ValueError as exc:  # an integer beyond Python's digit limit
        raise InputError(path, f"line {number}: invalid JSON ({str(exc)[:DETAIL_CHARS]})") from None
    except RecursionError:
        raise InputError(path, f"line {number}: invalid JSON (nested too deeply)") from None
    if not isinstance(record, dict):
        raise InputError(path, f"line {number}: expected a JSON object, got {type(record).__name__}")
    return record


def _reason(exc: OSError) -> str:
    return exc.strerror or exc.__class__.__name__
