"""The seed null of a study: the spectrum of W_a − W_b of two full fine-tuning runs that differ only in seed,
kept in DIR/spectra/, summarised in study.json's `subspace.seed_null` and report.md, measured once."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

from deltarank.analysis.engine import spectrum
from deltarank.analysis.results import SpectrumResult
from deltarank.study.design.study_file import parse_study
from deltarank.study.run.runner import run_study
from tests.study.tiny_study import one_thread, tiny_lm, tiny_study

__all__ = ["one_thread", "tiny_lm"]


def test_the_seed_null_is_the_spectrum_between_two_seeds(tmp_path: Path, tiny_lm: Path) -> None:
    raw = tiny_study(tmp_path, tiny_lm, grid={"method": ["full", "lora"], "seed": [0, 1]})
    raw["evaluate"] = {**raw["evaluate"], "seed_null": True, "diversity_prompts": None}
    study = parse_study(raw, "seeds.yaml")
    out = tmp_path / "study"
    lines: list[str] = []
    document = run_study(study, out, device="cpu", echo=lines.append)
    (null,) = document["subspace"]["seed_null"]  # the LoRA pair has no dense difference to take
    a, b = null["runs"]
    pair = [r for r in document["runs"] if r["name"] in (a, b)]
    assert {r["settings"]["method"] for r in pair} == {"full"}
    assert {r["settings"]["seed"] for r in pair} == {0, 1}
    assert (out / null["file"]).is_file()
    direct = spectrum(out / a, out / b, device="cpu")  # the same thing, computed here
    for module, value in null["energy_90_median"].items():
        assert value == statistics.median(m.ranks["energy_90"] for m in direct.matrices if m.module == module)
        width = min(next(m.shape for m in direct.matrices if m.module == module))
        assert null["energy_90_over_width_median"][module] == statistics.median(
            m.ranks["energy_90"] / width for m in direct.matrices if m.module == module
        )
    norms = [
        {m.name: m.delta_norm for m in SpectrumResult.from_json(out / f"spectra/{run}.json").matrices}
        for run in (a, b)
    ]
    for module, value in null["cosine_median"].items():  # ⟨ΔW_a, ΔW_b⟩ / (‖ΔW_a‖‖ΔW_b‖) from the three norms
        cosines = [
            (norms[0][m.name] ** 2 + norms[1][m.name] ** 2 - m.delta_norm**2)
            / (2 * norms[0][m.name] * norms[1][m.name])
            for m in direct.matrices
            if m.module == module
        ]
        assert value == pytest.approx(statistics.median(cosines))
        assert -1 <= value <= 1
    report = (out / "report.md").read_text()
    assert "## Seed null" in report and f"{a} vs {b}:" in report
    assert any(line.startswith("[subspace] spectra/seed-null-") for line in lines)
    again: list[str] = []
    run_study(study, out, device="cpu", echo=again.append)  # measured once: kept while the runs are unchanged
    assert not any(line.startswith("[subspace]") for line in again)
