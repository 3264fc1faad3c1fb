"""The measurement.json files of a study directory, and the base measurements a study needs.

    DIR/base/<model>--<data>/measurement.json   the base model measured on one training set (`base_key`)
    DIR/<run>/measurement.json                  a run measured

A measurement.json holds the hash of the `evaluate:` spec it was made with, the result and the wall seconds the
measurement took; a file of another `evaluate:` (or an unreadable one) counts as not measured.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from deltarank.errors import DeltarankError
from deltarank.io.atomic import write_json
from deltarank.io.run_directory import MEASUREMENT
from deltarank.study.design.evaluate_spec import LATER_KEYS, STUDY_LEVEL_KEYS, EvaluateSpec
from deltarank.study.design.study import Study, short_hash

BASE_DIR = "base"


def evaluate_hash(spec: EvaluateSpec) -> str:
    """The hash of an `evaluate:` spec that a measurement.json records (a measurement of another is redone).

    The study-level keys (intruders, similarity) are left out, and keys added later at their default, so a
    measurement made before they existed still counts.
    """
    values = {
        k: v
        for k, v in dataclasses.asdict(spec).items()
        if k not in STUDY_LEVEL_KEYS and not (k in LATER_KEYS and v == LATER_KEYS[k])
    }
    return short_hash(values)


def saved_measurement(folder: Path, spec: EvaluateSpec) -> dict[str, Any] | None:
    """The measurement.json document of `folder` made with this `evaluate:` spec, or None.

    Args:
        folder: a run directory or a base directory (DIR/base/<key>).
        spec: the study's `evaluate:`.

    Returns:
        The document (`evaluate`, `result`, `seconds`), or None when it is missing, unreadable or of another
        `evaluate:`.
    """
    path = folder / MEASUREMENT
    if not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if saved.get("evaluate") != evaluate_hash(spec):
        return None
    return dict(saved)


def cached_measurement(folder: Path, spec: EvaluateSpec) -> dict[str, Any] | None:
    """The result of `folder`'s measurement.json made with this `evaluate:` spec, or None."""
    saved = saved_measurement(folder, spec)
    if saved is None:
        return None
    return with_current_counts(folder, dict(saved["result"]))


def with_current_counts(folder: Path, result: dict[str, Any]) -> dict[str, Any]:
    """`result` with its diversity counted again from the samples `folder` keeps (generations.jsonl) when it
    was measured before the counts had their interval over prompts (`distinct_per_prompt_ci95`): counting is
    a pure function of the kept samples, so a measurement keeps its samples and gains the current counts."""
    from deltarank.evaluation.diversity import GENERATIONS_FILE, recount_generations

    diversity = result.get("diversity")
    kept = folder / GENERATIONS_FILE
    if isinstance(diversity, dict) and "distinct_counts" not in diversity and kept.is_file():
        result["diversity"] = {**diversity, **recount_generations(kept)}
    return result


def write_measurement(folder: Path, spec: EvaluateSpec, result: Mapping[str, Any], seconds: float) -> None:
    """Write `folder`/measurement.json: the `evaluate:` hash, the result and the wall seconds the measurement
    took (what `--dry-run` estimates the evaluation time left from)."""
    document = {"evaluate": evaluate_hash(spec), "result": result, "seconds": round(seconds, 2)}
    write_json(folder / MEASUREMENT, document)


# ------------------------------------------------------------------------------------------------ base models


def base_pairs(study: Study) -> dict[str, tuple[str, str]]:
    """The (base model, training data) pairs the runs need a base measurement for, by directory key."""
    pairs: dict[str, tuple[str, str]] = {}
    for run in study.runs:
        model, data = study.root_model(run), str(run.config["data"])
        pairs.setdefault(base_key(model, data), (model, data))
    return pairs


def base_key(model: str, data: str) -> str:
    """`smollm2-135m`, `builtin:code` -> `smollm2-135m--code` (a directory name under DIR/base)."""

    def part(text: str) -> str:
        text = text.removeprefix("builtin:")
        return re.sub(r"[^A-Za-z0-9.+_-]+", "_", Path(text).name if "/" in text else text).strip("_.")

    return f"{part(model)}--{part(data)}"


def base_cached(study: Study, out_dir: Path, key: str) -> bool:
    """Whether the base measurement DIR/base/<key> is made with the study's `evaluate:`."""
    return cached_measurement(out_dir / BASE_DIR / key, study.evaluate.for_run(None)) is not None


def base_measurements(study: Study, out_dir: Path) -> dict[str, Any]:
    """Every base measurement of the study, by key (each must exist).

    Raises:
        DeltarankError: a base model has not been measured with the study's `evaluate:`.
    """
    found = {}
    for key in base_pairs(study):
        result = cached_measurement(out_dir / BASE_DIR / key, study.evaluate.for_run(None))
        if result is None:
            raise DeltarankError(f"{out_dir / BASE_DIR / key}: the base model has not been measured")
        found[key] = result
    return found
