"""The subspace measurements of a study, made after its runs: intruder dimensions of every run with a ΔW
(`evaluate: {intruders: true}`), φ between the ΔW subspaces of pairs of runs (`evaluate: {similarity:
[[full, lora]]}`) and the merge geometry of the runs with a ΔW against one base (`evaluate: {merge: true}`:
`deltarank.study.measure.merge`).

    DIR/intruders-<run>.json        `deltarank intruders` of the run against the model it trained from
    DIR/similarity-<a>-<b>.json     `deltarank similarity` of runs a and b (both trained from one model)
    DIR/spectra/seed-null-<a>-<b>.json
                                    the spectrum of W_a − W_b of two full fine-tuning runs that differ only in
                                    seed (`evaluate: {seed_null: true}`): what training noise alone gives
    DIR/merge.json                  `deltarank similarity BASE T1 … Tn --merge` of the runs with a ΔW
                                    (merge-<base>.json for each further base: `deltarank.study.measure.merge`)
    DIR/subspace.json               what each file was made from (the sha256 of the runs' run.json): a file
                                    whose runs changed is measured again, the others are kept

study.json's `subspace` section holds the numbers a reader compares: the intruder count (total and per
matrix), the mean φ of the top-16 directions per module type and the merge geometry's per-module means.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deltarank.errors import DeltarankError
from deltarank.io.atomic import write_json
from deltarank.study.design.study import Study

if TYPE_CHECKING:
    from deltarank.study.measure.merge import MergeGroup

SUBSPACE_RECORD = "subspace.json"
PHI_TOP = 16  # φ of the top-16 singular directions: the summary's number (the file holds every k measured)


def intruders_file(run: str) -> str:
    """The intruders result of a run, relative to the study directory."""
    return f"intruders-{run}.json"


def similarity_file(a: str, b: str) -> str:
    """The similarity result of two runs, relative to the study directory."""
    return f"similarity-{a}-{b}.json"


def seed_null_file(a: str, b: str) -> str:
    """The seed null of two runs (a spectrum result), relative to the study directory."""
    return f"spectra/seed-null-{a}-{b}.json"


def seed_groups(study: Study, out_dir: Path) -> list[list[str]]:
    """The groups of two or more full fine-tuning runs that differ only in seed (same coordinates but `seed`,
    same parent), each in the study's order."""
    groups: dict[str, list[str]] = {}
    for run in study.runs:
        if str(run.config.get("method")) != "full" or not (out_dir / run.name).is_dir():
            continue
        key = repr((sorted((k, str(v)) for k, v in run.coordinates.items() if k != "seed"), run.parent))
        groups.setdefault(key, []).append(run.name)
    return [names for names in groups.values() if len(names) >= 2]


def seed_pairs(study: Study, out_dir: Path) -> list[tuple[str, str]]:
    """The first two runs of every seed group (`seed_groups`): the runs of its seed null."""
    return [(names[0], names[1]) for names in seed_groups(study, out_dir)]


def measure_subspace(
    study: Study, out_dir: Path, device: str = "auto", echo: Callable[[str], None] = print
) -> None:
    """Measure (or keep) the intruders, similarity and seed-null files the study's `evaluate:` asks for
    (study.json's `subspace` section is read from them: `subspace_section`)."""
    from deltarank.analysis.engine import spectrum
    from deltarank.analysis.tools.intruders import intruders
    from deltarank.analysis.tools.similarity import similarity
    from deltarank.study.measure.merge import measure_merge

    spec = study.evaluate
    if not spec.intruders and not spec.similarity and not spec.seed_null and not spec.merge:
        return
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
    for a, b in seed_pairs(study, out_dir) if spec.seed_null else []:
        null = functools.partial(spectrum, out_dir / a, out_dir / b, device=device)
        jobs.append((seed_null_file(a, b), [a, b], null))
    for group in _merge_groups(study, out_dir)[0] if spec.merge else []:
        paths = [out_dir / run for run in group.runs]
        merge = functools.partial(measure_merge, group.base, paths, device)
        jobs.append((group.file, list(group.runs), merge))
    for name, runs, make in jobs:
        digests = {run: _run_digest(out_dir / run) for run in runs}
        if saved.get(name) == digests and (out_dir / name).is_file():
            made[name] = digests
            continue
        echo(f"[subspace] {name.removesuffix('.json')}")
        (out_dir / name).parent.mkdir(parents=True, exist_ok=True)
        make().to_json(out_dir / name)
        made[name] = digests
        write_json(record_path, {**saved, **made})
    write_json(record_path, made)


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
    if spec.seed_null:
        section["seed_null"] = [_seed_null_row(out_dir, a, b) for a, b in seed_pairs(study, out_dir)]
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
    if spec.merge:
        from deltarank.study.measure.merge import merge_section

        groups, skipped = _merge_groups(study, out_dir)
        section["merge"] = merge_section(groups, skipped, out_dir, len(_runs_with_delta(study, out_dir)))
    return section


def _merge_groups(study: Study, out_dir: Path) -> tuple[list[MergeGroup], list[dict[str, Any]]]:
    """The runs with a ΔW grouped by their base (`deltarank.study.measure.merge.merge_groups`)."""
    from deltarank.study.measure.merge import merge_groups

    return merge_groups(_runs_with_delta(study, out_dir), lambda run: _base_of(study, run, out_dir))


def _seed_null_row(out_dir: Path, a: str, b: str) -> dict[str, Any]:
    """study.json's entry of one seed null: per module type the median energy_90 of W_a − W_b and its share
    of the width (what a run's own ΔW is read against: `deltarank.study.measure.spectra.rank_medians`), and
    the median cosine of the two runs' ΔW (from the three Frobenius norms: the share of their direction the two
    seeds have in common; 1 − cosine of each ΔW's energy is seed-specific when the two are equally large)."""
    from deltarank.analysis.results import SpectrumResult
    from deltarank.analysis.results.medians import module_medians
    from deltarank.study.measure.spectra import rank_medians, spectrum_file

    null = SpectrumResult.from_json(out_dir / seed_null_file(a, b))
    medians = rank_medians(null)
    own = [
        {m.name: m.delta_norm for m in SpectrumResult.from_json(out_dir / spectrum_file(run)).matrices}
        for run in (a, b)
    ]

    def cosine(matrix: Any) -> float | None:  # ‖a − b‖² = ‖a‖² + ‖b‖² − 2⟨a, b⟩, all three measured
        norm_a, norm_b = own[0].get(matrix.name), own[1].get(matrix.name)
        if not norm_a or not norm_b:
            return None
        return (norm_a**2 + norm_b**2 - matrix.delta_norm**2) / (2 * norm_a * norm_b)

    return {
        "runs": [a, b],
        "file": seed_null_file(a, b),
        "energy_90_median": {m: row["energy_90_median"] for m, row in medians.items()},
        "energy_90_over_width_median": {m: row["energy_90_over_width_median"] for m, row in medians.items()},
        "cosine_median": module_medians(null.matrices, cosine),
    }


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
