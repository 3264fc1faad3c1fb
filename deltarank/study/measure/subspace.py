"""The subspace measurements of a study, made after its runs: intruder dimensions of every run with a ΔW
(`evaluate: {intruders: true}`) and φ between the ΔW subspaces of pairs of runs (`evaluate: {similarity:
[[full, lora]]}`).

    DIR/intruders-<run>.json        `deltarank intruders` of the run against the model it trained from
    DIR/similarity-<a>-<b>.json     `deltarank similarity` of runs a and b (both trained from one model)
    DIR/subspace.json               what each file was made from (the sha256 of the runs' run.json): a file
                                    whose runs changed is measured again, the others are kept

study.json's `subspace` section holds the numbers a reader compares: the intruder count (total and per
matrix) and the mean φ of the top-16 directions per module type.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from deltarank.errors import DeltarankError
from deltarank.io.atomic import write_json
from deltarank.study.design.study import Study

SUBSPACE_RECORD = "subspace.json"
PHI_TOP = 16  # φ of the top-16 singular directions: the summary's number (the file holds every k measured)


def intruders_file(run: str) -> str:
    """The intruders result of a run, relative to the study directory."""
    return f"intruders-{run}.json"


def similarity_file(a: str, b: str) -> str:
    """The similarity result of two runs, relative to the study directory."""
    return f"similarity-{a}-{b}.json"


def measure_subspace(
    study: Study, out_dir: Path, device: str = "auto", echo: Callable[[str], None] = print
) -> dict[str, Any]:
    """Measure (or keep) the intruders and similarity files the study's `evaluate:` asks for; returns
    study.json's `subspace` section ({} when none is asked for)."""
    from deltarank.analysis.tools.intruders import intruders
    from deltarank.analysis.tools.similarity import similarity

    spec = study.evaluate
    if not spec.intruders and not spec.similarity:
        return {}
    record_path = out_dir / SUBSPACE_RECORD
    saved: dict[str, Any] = _read_record(record_path)
    made: dict[str, Any] = {}
    jobs: list[tuple[str, list[str], Callable[[], Any]]] = []
    if spec.intruders:
        for run in _runs_with_delta(study, out_dir):
            measure = functools.partial(
                intruders, _base_of(study, run, out_dir), out_dir / run, device=device
            )
            jobs.append((intruders_file(run), [run], measure))
    for a, b in spec.similarity:
        base = _base_of(study, a, out_dir)
        if _base_of(study, b, out_dir) != base:
            raise DeltarankError(f"similarity {a} vs {b}: the two runs train from different models")
        compare = functools.partial(similarity, base, out_dir / a, out_dir / b, device=device)
        jobs.append((similarity_file(a, b), [a, b], compare))
    for name, runs, make in jobs:
        digests = {run: _run_digest(out_dir / run) for run in runs}
        if saved.get(name) == digests and (out_dir / name).is_file():
            made[name] = digests
            continue
        echo(f"[subspace] {name.removesuffix('.json')}")
        make().to_json(out_dir / name)
        made[name] = digests
        write_json(record_path, {**saved, **made})
    write_json(record_path, made)
    return subspace_section(study, out_dir)


def subspace_section(study: Study, out_dir: Path) -> dict[str, Any]:
    """study.json's `subspace`: per run its intruder counts, per pair its mean φ (top 16) by module type."""
    from deltarank.analysis.results.similarity import SimilarityResult
    from deltarank.analysis.tools.intruders import IntruderResult

    section: dict[str, Any] = {}
    spec = study.evaluate
    if spec.intruders:
        section["intruders"] = {}
        for run in _runs_with_delta(study, out_dir):
            counted = IntruderResult.from_json(out_dir / intruders_file(run))
            section["intruders"][run] = {
                "file": intruders_file(run),
                "total": counted.total(),
                "per_matrix": counted.total() / max(len(counted.matrices), 1),
            }
    if spec.similarity:
        section["similarity"] = []
        for a, b in spec.similarity:
            compared = SimilarityResult.from_json(out_dir / similarity_file(a, b))
            section["similarity"].append(
                {
                    "runs": [a, b],
                    "file": similarity_file(a, b),
                    f"phi_top{PHI_TOP}": compared.module_means(PHI_TOP),
                    f"phi_chance_top{PHI_TOP}": compared.module_chance(PHI_TOP),
                }
            )
    return section


def _runs_with_delta(study: Study, out_dir: Path) -> list[str]:
    from deltarank.io.model_ref import read_run_record
    from deltarank.io.training_methods import REGISTRY

    names = []
    for run in study.runs:
        method = str(read_run_record(out_dir / run.name).get("method"))
        if method in REGISTRY and REGISTRY[method].has_delta:
            names.append(run.name)
    return names


def _base_of(study: Study, run: str, out_dir: Path) -> str:
    """The weights a run's ΔW is taken against: its model's, or its parent run's directory."""
    from deltarank.study.design.study import run_model
    from deltarank.train.models import resolve_model

    return str(resolve_model(run_model(study.run(run), out_dir)).weights)


def _run_digest(run_dir: Path) -> str:
    from deltarank.io.run_directory import RunDirectory

    return hashlib.sha256(RunDirectory(run_dir).record.read_bytes()).hexdigest()


def _read_record(path: Path) -> dict[str, Any]:
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return saved if isinstance(saved, dict) else {}
