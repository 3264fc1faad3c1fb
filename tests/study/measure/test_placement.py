"""Sparsity and placement inside a study: each row's sparsity medians are those of its kept spectrum, a study with
`placement: true` writes every run's placement.json and its medians into the row and report.md, and studies
without the key keep their measurement hashes."""

from __future__ import annotations

import dataclasses
import json
import statistics
from pathlib import Path
from typing import Any

import pytest

from deltarank.analysis.results import SpectrumResult
from deltarank.analysis.results.sparsity import MEASURES as SPARSITY_MEASURES
from deltarank.study.design.evaluate_spec import EvaluateSpec
from deltarank.study.design.study_file import parse_study
from deltarank.study.measure.measurement_file import evaluate_hash
from deltarank.study.run.runner import run_study
from tests.study.tiny_study import one_thread, tiny_lm, tiny_study

__all__ = ["one_thread", "tiny_lm"]  # fixtures


def placement_medians_of(document: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Per module type, the median over its matrices of each share at k = r₀.₉, from placement.json's records."""
    values: dict[str, dict[str, list[float]]] = {}
    for matrix in document["matrices"]:
        entry = next((s for s in matrix["subspaces"] if s["key"] == "energy_90"), None)
        if entry is None:
            continue
        found = values.setdefault(matrix["module"], {})
        for name in ("k", "left_top", "left_bottom", "left_chance", "right_top", "right_chance"):
            found.setdefault(name, []).append(float(entry[name]))
    return {m: {k: statistics.median(v) for k, v in found.items()} for m, found in values.items()}


def test_a_study_with_placement_keeps_its_medians_and_the_sparsity_of_its_spectra(
    tmp_path: Path, tiny_lm: Path
) -> None:
    raw = tiny_study(tmp_path, tiny_lm, grid={"method": ["full", "lora"]})
    raw["evaluate"] = {**raw["evaluate"], "diversity_prompts": None, "placement": True}
    out = tmp_path / "study"
    study = run_study(parse_study(raw, "p.yaml"), out, device="cpu", echo=lambda s: None)

    assert "placement" not in study["base"]
    for row in study["runs"]:
        document = json.loads((out / row["placement_file"]).read_text(encoding="utf-8"))
        expected = placement_medians_of(document)
        assert set(row["placement"]) == set(expected) and expected, row["name"]
        for module, medians in expected.items():
            for name, value in medians.items():
                assert row["placement"][module][f"{name}_median"] == pytest.approx(value, rel=1e-12), name
            # a share is a fraction of ‖ΔW‖²; k/d its chance
            assert 0.0 <= row["placement"][module]["left_top_median"] <= 1.0

        spectrum = SpectrumResult.from_json(out / row["spectrum"])
        for module, ranks in row["ranks"].items():
            records = [m for m in spectrum.matrices if m.module == module]
            for key in SPARSITY_MEASURES:
                present = [
                    v
                    for m in records
                    if m.sparsity is not None and (v := getattr(m.sparsity, key)) is not None
                ]
                expected_median = statistics.median(present) if present else None
                assert ranks[f"{key}_median"] == pytest.approx(expected_median), (row["name"], module, key)
    full = next(r for r in study["runs"] if r["settings"]["method"] == "full")
    q_proj = full["ranks"]["q_proj"]
    assert q_proj["within_atol_median"] is not None and 0.0 <= q_proj["within_atol_median"] <= 1.0
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "## Placement" in report
    cell = f"{full['placement']['q_proj']['left_top_median']:.3f} ({full['placement']['q_proj']['left_chance_median']:.3f})"
    assert cell in report


def test_the_key_off_keeps_the_measurement_hash_of_studies_made_before_it() -> None:
    fields = [(f.name, f.type, f.default) for f in dataclasses.fields(EvaluateSpec) if f.name != "placement"]
    before = dataclasses.make_dataclass("EvaluateSpec", fields, frozen=True)  # the spec without the key
    for values in ({}, {"held_out_sequences": 8, "functional_rank": True}):
        spec = EvaluateSpec(**values)  # type: ignore[arg-type]
        assert evaluate_hash(before(**values)) == evaluate_hash(spec)  # type: ignore[arg-type]
        assert evaluate_hash(EvaluateSpec.from_mapping(values)) == evaluate_hash(spec)
        on = dataclasses.replace(spec, placement=True)
        assert evaluate_hash(on.for_run("full")) != evaluate_hash(spec)
        assert evaluate_hash(on.for_run(None)) == evaluate_hash(spec.for_run(None))  # bases have no ΔW
