"""study.json (`deltarank.study/1`) and study.csv: one row per run, written atomically.

study.json: {"schema", "study": {name, description, fingerprint, file (the resolved study), held_out_splits (the
held-out parts split from training files: `deltarank.study.design.held_out_split`), not_measured (what the study leaves
out: `deltarank.study.design.coverage`)}, "base": the first base model's measurements, "bases": {key: measurements}
(one per base model and training data), "runs": [{"name", "coordinates", "from", "settings", "base", "learning",
"forgetting", "diversity", "cost", "ranks", "spectrum", "checkpoints", "nulls" (r0.9 against the run's self-sample and
seed nulls: `deltarank.study.measure.nulls`), "functional_rank" (`deltarank.study.measure.functional_rank`),
"placement" and "placement_file" (`deltarank.study.measure.placement`), "mitigated" (the run with its intruder
directions scaled by λ, evaluated again: `deltarank.study.measure.mitigation`)}],
"groups": rows that differ only in seed,
with means and confidence intervals, "subspace": intruders, similarity, seed nulls and the merge geometry
(`deltarank.study.measure.merge`) (when measured)}. Read by
`deltarank.figures.study.read_study`. study.csv: the runs flattened, one column per leaf (`coordinates.method`, `learning.held_out_loss`,
`ranks.down_proj.energy_90_median`, ...).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from deltarank.figures.study import SCHEMA  # the reader's (deltarank.figures.study.read_study): declared once
from deltarank.io.atomic import write_atomic, write_json

STUDY_JSON = "study.json"
STUDY_CSV = "study.csv"
LEADING_COLUMNS = ("name", "from")
NOT_IN_CSV = ("per_sequence",)  # each sequence's loss: for the intervals in study.json, not for a spreadsheet


def study_document(
    study: Mapping[str, Any],
    bases: Mapping[str, Any],
    rows: Sequence[Mapping[str, Any]],
    subspace: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The study.json document of a study's resolved file, base measurements, run rows and (when measured) its
    subspace section (`deltarank.study.measure.subspace`)."""
    from deltarank.study.claims.statistics import group_runs

    first: Mapping[str, Any] = next(iter(bases.values()), {})
    return {
        "schema": SCHEMA,
        "study": dict(study),
        "base": dict(first),
        "bases": dict(bases),
        "runs": [dict(r) for r in rows],
        "groups": group_runs(rows),
        **({"subspace": dict(subspace)} if subspace else {}),
    }


def write_study(document: Mapping[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """Write study.json and study.csv into `out_dir` (each atomically); returns their paths."""
    json_path, csv_path = out_dir / STUDY_JSON, out_dir / STUDY_CSV
    write_json(json_path, document)
    write_atomic(csv_path, runs_csv(document["runs"]))
    return json_path, csv_path


def runs_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """The rows as CSV: one column per leaf of the nested row (lists as JSON), in first-seen order; each
    sequence's losses (`per_sequence`) stay in study.json."""
    flat = [flatten({k: v for k, v in row.items() if k not in NOT_IN_CSV}) for row in rows]
    columns = list(LEADING_COLUMNS)
    for row in flat:
        columns += [c for c in row if c not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in flat:
        writer.writerow({c: _cell(row.get(c)) for c in columns})
    return buffer.getvalue()


def flatten(value: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"learning": {"loss": 1.0}} -> {"learning.loss": 1.0}."""
    flat: dict[str, Any] = {}
    for key, item in value.items():
        name = f"{prefix}{key}"
        if isinstance(item, Mapping) and item:
            flat.update(flatten(item, name + "."))
        else:
            flat[name] = item
    return flat


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(value, ensure_ascii=False)
    return value
