"""A held-out part split from a study's own training data, when `evaluate:` names no held-out set.

A run trained on a JSONL file has no held-out set of its own (a built-in set has its `:test` split). Without
`evaluate.held_out`, the study splits one off instead of measuring no learning:

    DIR/data/<name>/train.jsonl      the lines the runs train on (in their order)
    DIR/data/<name>/held_out.jsonl   HELD_OUT_SHARE of the lines (at most MAX_HELD_OUT, at least 1), never trained on
    DIR/data/<name>/split.json       source, its SHA-256, seed, counts (also in study.json: study.held_out_splits)

The lines are chosen by `random.Random(seed)` (`base: seed`, else 0), so the same file and seed always give
the same split, the same for every run of the study (a grid over `seed` does not move it). Lines are copied
byte for byte. The held-out set is also where the default diversity prompts come from
(`deltarank.evaluation.prompts.held_out_prompts`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import re
from pathlib import Path
from typing import Any

from deltarank.errors import InputError
from deltarank.study.design.evaluate_spec import EvaluateSpec
from deltarank.study.design.study import Study, short_hash

SPLIT_DIR = "data"
TRAIN_FILE = "train.jsonl"
HELD_OUT_FILE = "held_out.jsonl"
SPLIT_RECORD = "split.json"
HELD_OUT_SHARE = 0.1
MAX_HELD_OUT = 64


def needs_split(spec: EvaluateSpec, data: str) -> bool:
    """Whether a run trained on `data` gets its held-out set split from its training file."""
    from deltarank.train.builtin_data import is_builtin

    return not is_builtin(data) and spec.held_out_for(data) is None


def held_out_count(examples: int) -> int:
    """Examples held out of `examples`: HELD_OUT_SHARE, rounded, at least 1 and at most MAX_HELD_OUT."""
    return min(MAX_HELD_OUT, max(1, round(examples * HELD_OUT_SHARE)))


def check_splittable(data: str) -> None:
    """Fail before anything is written when `data` is too small to hold a part out (one example left to train).

    Raises:
        InputError: fewer than 2 records.
    """
    count = len(_lines(Path(data)))
    if count < 2:
        raise InputError(
            data,
            f"holds {count} example: too few to split a held-out part from; name one in evaluate.held_out",
        )


def split_folder(out_dir: Path, data: str) -> Path:
    """DIR/data/<file stem>-<hash of the data spec>: where the split of `data` lives."""
    stem = re.sub(r"[^A-Za-z0-9.+_-]+", "_", Path(data).stem).strip("_.") or "data"
    return out_dir / SPLIT_DIR / f"{stem}-{short_hash(data)}"


def split_seed(study: Study) -> int:
    """The seed of every split of a study: `base: seed`, else 0."""
    return int(study.resolved["base"].get("seed", 0))


def write_splits(study: Study, out_dir: Path) -> list[dict[str, Any]]:
    """Write the split of every training file that needs one (rewritten identically on a rerun); their records.

    Raises:
        InputError: a file too small to split.
    """
    written = []
    for data in dict.fromkeys(str(run.config["data"]) for run in study.runs):
        if needs_split(study.evaluate, data):
            written.append(write_split(data, split_folder(out_dir, data), split_seed(study)))
    return written


def write_split(data: str, folder: Path, seed: int) -> dict[str, Any]:
    """Split `data`'s lines into folder/train.jsonl and folder/held_out.jsonl; return (and write) the record."""
    from deltarank.io.atomic import write_atomic, write_json

    source = Path(data)
    lines = _lines(source)
    held = set(random.Random(seed).sample(range(len(lines)), held_out_count(len(lines))))
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(folder / TRAIN_FILE, b"".join(line for i, line in enumerate(lines) if i not in held))
    write_atomic(folder / HELD_OUT_FILE, b"".join(line for i, line in enumerate(lines) if i in held))
    record = {
        "source": data,
        "source_sha256": hashlib.sha256(source.read_bytes()).hexdigest(),
        "seed": seed,
        "examples": len(lines),
        "train_examples": len(lines) - len(held),
        "held_out_examples": len(held),
        "train": str(folder / TRAIN_FILE),
        "held_out": str(folder / HELD_OUT_FILE),
    }
    write_json(folder / SPLIT_RECORD, record)
    return record


def split_records(study: Study, out_dir: Path) -> list[dict[str, Any]]:
    """The records of the study's splits, as written (for study.json)."""
    found = []
    for data in dict.fromkeys(str(run.config["data"]) for run in study.runs):
        path = split_folder(out_dir, data) / SPLIT_RECORD
        if needs_split(study.evaluate, data) and path.is_file():
            found.append(json.loads(path.read_text(encoding="utf-8")))
    return found


def split_plan(study: Study) -> list[str]:
    """One line per training file the study will split (for `--dry-run`; nothing is written)."""
    found = []
    for data in dict.fromkeys(str(run.config["data"]) for run in study.runs):
        if needs_split(study.evaluate, data):
            count = len(_lines(Path(data)))
            found.append(
                f"held-out: {held_out_count(count)} of the {count} examples of {data} split off "
                f"(seed {split_seed(study)}, never trained on; evaluate.held_out names another set)"
            )
    return found


def training_data(study: Study, data: str, out_dir: Path) -> str:
    """What a run on `data` trains on: the split's train part, or `data` itself."""
    if needs_split(study.evaluate, data):
        return str(split_folder(out_dir, data) / TRAIN_FILE)
    return data


def evaluate_for(study: Study, data: str, out_dir: Path) -> EvaluateSpec:
    """The `evaluate:` a model trained on `data` is measured with: the split's held-out part as `held_out`
    when one was split off (measurement.json keeps the hash of the study's own `evaluate:`)."""
    if needs_split(study.evaluate, data):
        held_out = str(split_folder(out_dir, data) / HELD_OUT_FILE)
        return dataclasses.replace(study.evaluate, held_out=held_out)
    return study.evaluate


def _lines(source: Path) -> list[bytes]:
    """The non-blank lines of a JSONL file, each ending in a newline."""
    with source.open("rb") as handle:
        return [line if line.endswith(b"\n") else line + b"\n" for line in handle if line.strip()]
