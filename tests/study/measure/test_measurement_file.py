"""measurement.json: a measurement made before forgetting became the KL estimate is redone, never reused; one
made before diversity counts had their interval gains the current counts from its kept samples."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from deltarank.io.atomic import write_json, write_jsonl
from deltarank.io.run_directory import MEASUREMENT
from deltarank.study.design.evaluate_spec import LATER_KEYS, STUDY_LEVEL_KEYS, EvaluateSpec
from deltarank.study.design.study import short_hash
from deltarank.study.measure.measurement_file import cached_measurement, write_measurement


def _hash_before_general_samples(spec: EvaluateSpec) -> str:
    """The hash a measurement.json recorded before `general_samples` existed (the forgetting set was then one
    answer per prompt at T = 0.7, top_p 0.9): every key of the spec but that one."""
    values = {
        k: v
        for k, v in dataclasses.asdict(spec).items()
        if k not in STUDY_LEVEL_KEYS
        and k != "general_samples"
        and not (k in LATER_KEYS and v == LATER_KEYS[k])
    }
    return short_hash(values)


def test_a_measurement_of_the_old_forgetting_is_not_reused(tmp_path: Path) -> None:
    spec = EvaluateSpec(held_out_sequences=32, general_tokens=64)  # the quick preset's sizes
    old = tmp_path / "old"
    old.mkdir()
    write_json(
        old / MEASUREMENT, {"evaluate": _hash_before_general_samples(spec), "result": {}, "seconds": 1}
    )
    assert cached_measurement(old, spec) is None  # measured again: its forgetting was not a divergence
    new = tmp_path / "new"
    new.mkdir()
    write_measurement(new, spec, {"forgetting": {"general_loss_rise": 0.01}}, 1.0)
    assert cached_measurement(new, spec) == {"forgetting": {"general_loss_rise": 0.01}}
    assert cached_measurement(new, dataclasses.replace(spec, general_samples=4)) is None


def test_a_kept_measurement_gains_the_current_diversity_counts(tmp_path: Path) -> None:
    """Counts are a pure function of generations.jsonl: an older measurement (no interval over prompts) is
    counted again from its samples; its generation settings stay."""
    spec = EvaluateSpec(held_out_sequences=32, general_tokens=64)
    texts = {"p0": "aabb", "p1": "cdee", "p2": "fghh"}  # 2, 3 and 3 distinct of 4 samples
    lines = [
        {"prompt_id": key, "sample": j, "text": text, "passed": None}
        for key, found in texts.items()
        for j, text in enumerate(found)
    ]
    write_jsonl(tmp_path / "generations.jsonl", lines)
    old = {"temperature": 0.2, "prompts": 3, "distinct_per_prompt": 8 / 3}
    write_measurement(tmp_path, spec, {"diversity": old}, 1.0)
    diversity = (cached_measurement(tmp_path, spec) or {})["diversity"]
    # counts 2, 3, 3: mean 8/3, s = √(1/3), half = t₀.₉₇₅,₂ · s/√3 = 4.3027 · 1/3 = 1.4342: [1.2324, 4.1009],
    # clipped to a count's range [1, 4 samples]
    assert diversity["temperature"] == 0.2 and diversity["distinct_counts"] == [2, 3, 3]
    assert diversity["distinct_per_prompt"] == 8 / 3
    low, high = diversity["distinct_per_prompt_ci95"]
    assert low == pytest.approx(8 / 3 - 1.4342, abs=1e-4) and high == 4.0
