"""measurement.json: a measurement made before forgetting became the KL estimate is redone, never reused."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from deltarank.io.atomic import write_json
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
