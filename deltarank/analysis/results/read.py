"""Read any result file by its `schema`: what `deltarank plot` and `deltarank compare` open."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deltarank.analysis.results.base import ResultFile, read_json_object
from deltarank.analysis.results.extract import RESULT_FILE as EXTRACT_FILE
from deltarank.analysis.results.extract import ExtractResult
from deltarank.analysis.results.intruders import IntruderResult
from deltarank.analysis.results.placement import RESULT_FILE as PLACEMENT_FILE
from deltarank.analysis.results.placement import PlacementResult
from deltarank.analysis.results.recommendation import RESULT_FILE as RECOMMENDATION_FILE
from deltarank.analysis.results.recommendation import RecommendationResult
from deltarank.analysis.results.similarity import SimilarityResult
from deltarank.analysis.results.spectrum import SpectrumResult
from deltarank.errors import InputError

# schema -> result family, in the order the commands list them.
FAMILIES: dict[str, type[ResultFile[Any]]] = {
    family.SCHEMA: family
    for family in (
        SpectrumResult,
        IntruderResult,
        SimilarityResult,
        ExtractResult,
        PlacementResult,
        RecommendationResult,
    )
}
# Older schema names still read -> their family (`ResultFile.RENAMED`: the keys renamed since).
OLDER: dict[str, type[ResultFile[Any]]] = {
    schema: family for family in FAMILIES.values() for schema in family.RENAMED
}
# The result files commands write inside their output directories (extract: the adapter; placement; recommend).
DIRECTORY_FILES = (EXTRACT_FILE, PLACEMENT_FILE, RECOMMENDATION_FILE)


def read_result(source: str | Path) -> ResultFile[Any]:
    """The result in a file, of whichever family its `schema` names.

    Args:
        source: A result JSON file, an adapter directory written by `extract` (its `deltarank_extract.json`), an
            output directory of `placement` (its `placement.json`) or of `recommend` (its
            `recommendation.json`), or JSON text starting with `{`.

    Raises:
        InputError: unreadable or invalid JSON, an unknown schema (the message names the current ones; older
            versions a family still reads are read too), or a malformed body.
    """
    text = str(source)
    if not text.lstrip().startswith("{") and Path(text).is_dir():
        inside = [Path(text) / name for name in DIRECTORY_FILES]
        source = next((path for path in inside if path.is_file()), inside[0])
    data = read_json_object(source)
    schema = data.get("schema")
    family = (FAMILIES.get(schema) or OLDER.get(schema)) if isinstance(schema, str) else None
    if family is None:
        what = "no schema field" if schema is None else f"schema {schema!r}"
        raise InputError(
            source, f"not a deltarank result file ({what}); known schemas: {', '.join(FAMILIES)}"
        )
    return family.from_data(data, source)
