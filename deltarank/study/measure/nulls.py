"""How far each run's r₀.₉ sits above its nulls: study.json's `nulls` of every run with a kept spectrum.

A null is a ΔW that holds nothing but training noise at the run's settings:

- `self_sample`: the run with the same settings (every study.json `settings` key but `data`, `data_size` and
  `seed`: method, learning rate, steps, batch, grad_accum, seq_len, model, LoRA r and α, targets, weight decay,
  ...) and the same parent, trained on `builtin:self-samples` (the base model's own T = 1 samples, on which
  fine-tuning learns nothing in expectation: `deltarank.train.builtin_self_samples`). The one of the same seed
  when there is one, else the first in the study's order. A self-sample run is no run's null but its own.
- `seed`: W_a − W_b of the seed pair of the run's seed group (full fine-tuning runs that differ only in seed,
  `evaluate: {seed_null: true}`: `deltarank.study.measure.subspace`).

Each record: `{"kind", "null" (the null run, or the seed pair [a, b]), "file" (the null's spectrum, relative to
the study directory), "modules": {module type: {"run_energy_90", "null_energy_90", "ratio"}}}`, the energy_90
values the medians over the layers of the module type as `module_rank_statistics` computes them (the one
place per-module rank statistics come from), `ratio` = run ÷ null (None where either is missing or the null's
is 0). A ratio near 1 says the run's ΔW needs no more directions than noise at its settings.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from deltarank.study.design.study import Study

UNMATCHED_SETTINGS = ("data", "data_size", "seed")  # what a self-sample null may differ in
RANK_KEY = "energy_90"
KINDS = ("self_sample", "seed")


def run_nulls(
    study: Study, out_dir: Path, rows: Sequence[Mapping[str, Any]]
) -> dict[str, list[dict[str, Any]]]:
    """The `nulls` of every row (study.json's runs) by run name: an empty list for a run without a kept
    spectrum or without a null."""
    from deltarank.study.measure.subspace import seed_groups, seed_null_file

    measured = [r for r in rows if r.get("spectrum")]
    groups = seed_groups(study, out_dir) if study.evaluate.seed_null else []
    medians = _Medians(out_dir)
    found: dict[str, list[dict[str, Any]]] = {str(r["name"]): [] for r in rows}
    for row in measured:
        name = str(row["name"])
        null = self_sample_null(row, measured)
        if null is not None:
            found[name].append(medians.record("self_sample", str(null["name"]), str(null["spectrum"]), row))
        for group in groups:
            file = seed_null_file(group[0], group[1])
            if name in group and (out_dir / file).is_file():
                found[name].append(medians.record("seed", [group[0], group[1]], file, row))
    return found


def self_sample_null(row: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The row of the run's self-sample null among `rows` (the same seed first), or None."""
    from deltarank.train.builtin_self_samples import is_self_samples

    settings = row.get("settings") or {}
    if is_self_samples(settings.get("data")):
        return None
    candidates = [
        r
        for r in rows
        if is_self_samples((r.get("settings") or {}).get("data"))
        and r.get("from") == row.get("from")
        and _matched(r.get("settings") or {}) == _matched(settings)
    ]
    same_seed = [r for r in candidates if (r.get("settings") or {}).get("seed") == settings.get("seed")]
    found = same_seed or candidates
    return found[0] if found else None


def _matched(settings: Mapping[str, Any]) -> dict[str, str]:
    return {k: repr(v) for k, v in settings.items() if k not in UNMATCHED_SETTINGS}


class _Medians:
    """energy_90 medians per module type of the study's spectrum files, each file read once."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.read: dict[str, dict[str, float | None]] = {}

    def of(self, file: str) -> dict[str, float | None]:
        if file not in self.read:
            from deltarank.analysis.results import SpectrumResult
            from deltarank.analysis.results.rank_statistics import module_rank_statistics

            table = module_rank_statistics(SpectrumResult.from_json(self.out_dir / file))
            self.read[file] = {m: (row.get(RANK_KEY) or {}).get("median") for m, row in table.items()}
        return self.read[file]

    def record(self, kind: str, null: str | list[str], file: str, row: Mapping[str, Any]) -> dict[str, Any]:
        """One `nulls` record of the run `row` against the null spectrum `file`."""
        own, noise = self.of(str(row["spectrum"])), self.of(file)
        modules = {}
        for module, value in own.items():
            base = noise.get(module)
            ratio = value / base if value is not None and base else None
            modules[module] = {"run_energy_90": value, "null_energy_90": base, "ratio": ratio}
        return {"kind": kind, "null": null, "file": file, "modules": modules}
