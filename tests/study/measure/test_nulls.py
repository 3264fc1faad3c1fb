"""A study with builtin:self-samples runs: each run's `nulls` in study.json (its self-sample null: the run of the
same settings on the base model's own samples; its seed null: W_a − W_b of its seed group) with r0.9 ratios
that the spectra files give, and the table in report.md."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import pytest

from deltarank.analysis.results import SpectrumResult
from deltarank.study.design.study_file import parse_study
from deltarank.study.run.runner import run_study
from tests.study.tiny_study import one_thread, tiny_lm, tiny_study

__all__ = ["one_thread", "tiny_lm"]

NULL_DATA = "builtin:self-samples"


def energy_90_medians(path: Path) -> dict[str, float]:
    """Per module type, the median over layers of energy_90 (computed here, from the file)."""
    result = SpectrumResult.from_json(path)
    modules = dict.fromkeys(m.module for m in result.matrices)
    return {
        module: statistics.median(m.ranks["energy_90"] for m in result.matrices if m.module == module)
        for module in modules
    }


def test_each_run_is_read_against_its_self_sample_and_seed_nulls(tmp_path: Path, tiny_lm: Path) -> None:
    raw = tiny_study(
        tmp_path, tiny_lm, grid={"data": [str(tmp_path / "train.jsonl"), NULL_DATA], "seed": [0, 1]}
    )
    raw["base"]["method"] = "full"
    raw["runs"] = [
        {"name": "lora", "method": "lora", "lora_r": 2, "lr": 1e-2},
        {"name": "lora-null", "method": "lora", "lora_r": 2, "lr": 1e-2, "data": NULL_DATA},
        {"name": "lora-other-lr", "method": "lora", "lora_r": 2, "lr": 1e-3},
    ]
    raw["evaluate"] = {**raw["evaluate"], "seed_null": True, "diversity_prompts": None}
    out = tmp_path / "study"
    document = run_study(parse_study(raw, "nulls.yaml"), out, device="cpu", echo=lambda _: None)
    runs = {r["name"]: r for r in document["runs"]}
    full = {
        (r["settings"]["data"] == NULL_DATA, r["settings"]["seed"]): name
        for name, r in runs.items()
        if r["settings"]["method"] == "full"
    }

    def check(record: dict[str, Any], run: str, null_file: str) -> None:
        own, noise = energy_90_medians(out / runs[run]["spectrum"]), energy_90_medians(out / null_file)
        assert record["file"] == null_file and set(record["modules"]) == set(own)
        for module, value in record["modules"].items():
            assert value["run_energy_90"] == own[module] and value["null_energy_90"] == noise[module]
            assert value["ratio"] == pytest.approx(own[module] / noise[module])

    for seed in (0, 1):
        name, null = full[(False, seed)], full[(True, seed)]  # the null of the same seed
        kinds = {r["kind"]: r for r in runs[name]["nulls"]}
        assert set(kinds) == {"self_sample", "seed"}
        assert kinds["self_sample"]["null"] == null
        check(kinds["self_sample"], name, f"spectra/{null}.json")
        pair = [full[(False, 0)], full[(False, 1)]]
        assert kinds["seed"]["null"] == pair
        check(kinds["seed"], name, f"spectra/seed-null-{pair[0]}-{pair[1]}.json")
        # a self-sample run is no run's self-sample null but its own; its seed group gives it a seed null
        assert [r["kind"] for r in runs[null]["nulls"]] == ["seed"]
    (lora_null,) = runs["lora"]["nulls"]  # LoRA has no dense seed null
    assert lora_null["kind"] == "self_sample" and lora_null["null"] == "lora-null"
    check(lora_null, "lora", "spectra/lora-null.json")
    assert runs["lora-other-lr"]["nulls"] == []  # no self-sample run at its learning rate
    assert (out / "lora-null" / "self_samples.jsonl").is_file()
    assert runs["lora-null"]["learning"]["held_out_loss"] is not None  # evaluate.held_out: every run's set
    report = (out / "report.md").read_text()
    assert "## r0.9 above the nulls" in report
    ratio = lora_null["modules"]["q_proj"]["ratio"]
    assert f"| lora | self-sample: lora-null | {ratio:.2f} (" in report
