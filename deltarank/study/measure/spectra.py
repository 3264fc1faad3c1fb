"""The spectra a study keeps of every run with a ΔW, so that its figures redraw without recomputing.

    DIR/spectra/<run>.json            the final ΔW of the run (a `deltarank spectrum` result file)
    DIR/spectra/<run>-step<N>.json    each measured step (with `evaluate: {checkpoints: true}`), final included

One pass over the base model serves every step of a run (`deltarank.analysis.engine.spectrum_many`). The
row of the run in study.json names its files relative to the study directory; its rank medians (per module
type: energy_90 and noise-floor rank, and the sparsity profile's shares) are computed from the final file.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from deltarank.analysis.results import SpectrumResult
from deltarank.analysis.results.sparsity import MEASURES as SPARSITY_MEASURES

SPECTRA_DIR = "spectra"
RANK_KEYS = {"energy_90_median": "energy_90", "noise_floor_median": "noise_floor"}


def spectrum_file(run: str, step: int | None = None) -> str:
    """The path of a run's spectrum (of one step, or the final), relative to the study directory."""
    return f"{SPECTRA_DIR}/{run}.json" if step is None else f"{SPECTRA_DIR}/{run}-step{step}.json"


def measure_spectra(
    base_weights: Path,
    study_dir: Path,
    run: str,
    steps: Sequence[tuple[int, Path]],
    device: str = "auto",
    per_step: bool = False,
) -> SpectrumResult:
    """The spectra of a run's ΔW at `steps` ((step, weights), the final last) against `base_weights`.

    Writes spectra/<run>.json (the final) and, when `per_step`, spectra/<run>-step<N>.json of every step;
    returns the final result.
    """
    from deltarank.analysis.engine import spectrum_many

    folder = study_dir / SPECTRA_DIR
    folder.mkdir(parents=True, exist_ok=True)
    measured = steps if per_step else steps[-1:]
    results = spectrum_many(base_weights, [str(path) for _, path in measured], device=device)
    final = study_dir / spectrum_file(run)
    if per_step:
        for (step, _), result in zip(measured, results, strict=True):
            result.to_json(study_dir / spectrum_file(run, step))
        shutil.copyfile(study_dir / spectrum_file(run, measured[-1][0]), final)
    else:
        results[-1].to_json(final)
    return results[-1]


def rank_medians(result: SpectrumResult) -> dict[str, dict[str, float | None]]:
    """Per module type, the medians over layers of energy_90 and of the noise-floor rank of a run's ΔW, its
    width min(m, n), energy_90 ÷ width (the width-aware scale of the rank claim) and the sparsity profile's
    shares (`<measure>_median` of every `SPARSITY_MEASURES`; None where no record has a profile, e.g. LoRA
    factors)."""
    from deltarank.analysis.results.medians import module_medians, rank_of
    from deltarank.analysis.results.rank_statistics import module_rank_statistics

    columns: dict[str, Callable[[Any], float | None]] = {k: rank_of(v) for k, v in RANK_KEYS.items()}
    per_column = {column: module_medians(result.matrices, value) for column, value in columns.items()}
    statistics = module_rank_statistics(result)
    found: dict[str, dict[str, float | None]] = {}
    for module in dict.fromkeys(m.module for m in result.matrices):
        row: dict[str, float | None] = {c: per_column[c].get(module) for c in columns}
        row["energy_90_over_width_median"] = _median_of(statistics[module].get("energy_90_over_width"))
        row["width"] = statistics[module]["width"]
        row |= {f"{key}_median": _median_of(statistics[module].get(key)) for key in SPARSITY_MEASURES}
        found[module] = row
    return found


def _median_of(spread: Mapping[str, float] | None) -> float | None:
    """The median of a `rank_statistics.spread` entry, None when the statistics have none."""
    return None if spread is None else spread["median"]


def read_run_spectra(study_dir: Path, rows: Sequence[Mapping[str, Any]]) -> dict[str, list[SpectrumResult]]:
    """The spectra a study kept, by run: every measured step (the final last), or the final alone."""
    found: dict[str, list[SpectrumResult]] = {}
    for row in rows:
        files = [p["spectrum"] for p in row.get("checkpoints", []) if p.get("spectrum")]
        files = files or ([row["spectrum"]] if row.get("spectrum") else [])
        if files:
            found[str(row["name"])] = [SpectrumResult.from_json(study_dir / f) for f in files]
    return found
