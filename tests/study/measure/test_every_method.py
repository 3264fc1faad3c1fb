"""Every method of `deltarank train --method` in one study: each run is trained, loaded as it was trained
(QLoRA on its NF4 base, bottleneck adapters added to the base), measured and drawn."""

from __future__ import annotations

from pathlib import Path

from deltarank.study.design.study_file import parse_study
from deltarank.study.measure.run_measures import NO_DELTA_METHODS
from deltarank.study.run.runner import run_study
from deltarank.train.config_validation import METHODS
from tests.study.tiny_study import one_thread, tiny_study  # noqa: F401 (autouse fixture)
from tests.train.conftest import save_tiny_model
from tests.train.tiny_runs import SMALL


def test_a_study_of_every_method(tmp_path: Path) -> None:
    """14 trainings and measurements of 3 steps: 10-20 s on one core."""
    # hidden 64 / MLP 128: bitsandbytes' CPU 4-bit kernels (QLoRA) need in_features >= 64
    model = save_tiny_model(tmp_path / "wide", hidden_size=64, intermediate_size=128)
    grid = [{"method": method, **SMALL.get(method, {})} for method in METHODS]
    raw = tiny_study(tmp_path, model, grid={"method": grid}, max_steps=3)
    raw["evaluate"] = {**raw["evaluate"], "diversity_n": 1, "diversity_samples": 2}
    study = run_study(
        parse_study(raw, "every-method.yaml"), tmp_path / "study", device="cpu", echo=lambda s: None
    )

    rows = {row["settings"]["method"]: row for row in study["runs"]}
    assert set(rows) == set(METHODS)
    for method, row in rows.items():
        assert row["learning"]["held_out_loss"] > 0, method
        assert row["learning"]["held_out_loss_change"] != 0, method  # three steps moved every method
        assert "general_loss_rise" in row["forgetting"], method
        assert row["diversity"]["samples_per_prompt"] == 2, method
        assert 0 < row["cost"]["trainable_parameters"] < row["cost"]["total_parameters"] or method == "full"
        if method in NO_DELTA_METHODS:
            assert row["ranks"] == {}, method
        else:  # a ΔW on the modules the method trained (AdaLoRA may prune a matrix's ranks to none)
            assert row["ranks"] and max(m["energy_90_median"] for m in row["ranks"].values()) >= 1, method
    assert rows["lora"]["ranks"]["q_proj"]["energy_90_median"] <= 2  # r = 2
    assert (tmp_path / "study" / "figures").is_dir() and (tmp_path / "study" / "report.md").is_file()
