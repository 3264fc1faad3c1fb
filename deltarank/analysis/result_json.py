"""Read and write the versioned JSON files of the subspace analyses (intruders, similarity, extract).

Each file is one JSON object whose `schema` field names its layout (e.g. `deltarank.intruders/1`); writes go
through `results.write_atomic`, so a reader never sees a partial file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from deltarank.analysis.results import write_atomic
from deltarank.errors import InputError


def dump_result(data: dict[str, Any], path: str | Path | None) -> str:
    """JSON text of `data` (NaN refused: undefined values are stored as null); written atomically to `path`."""
    text = json.dumps(data, indent=1, allow_nan=False)
    if path is not None:
        write_atomic(path, text)
    return text


def read_result(source: str | Path, schema: str) -> dict[str, Any]:
    """The JSON object of a result file (a path, or JSON text starting with `{`) whose schema is `schema`.

    Raises:
        InputError: unreadable file, invalid JSON, or another schema.
    """
    text = str(source)
    if not text.lstrip().startswith("{"):
        try:
            text = Path(source).read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(source, f"cannot read result file ({exc.__class__.__name__})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(source, f"not a JSON result file ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, dict) or data.get("schema") != schema:
        found = data.get("schema") if isinstance(data, dict) else None
        raise InputError(source, f"not a {schema} result file (schema {found!r})")
    return data
