"""`replay_fraction` as a study's grid axis: three runs, named `replay<f>`, their steps counting the replay
sequences; the f = 0 run is the run without replay (same hash); the `replay` preset's dry run."""

from __future__ import annotations

from pathlib import Path

import yaml
from click.testing import CliRunner

from deltarank.cli import main
from deltarank.study.design.study_file import parse_study

BASE = {
    "model": "smollm2-135m",
    "data": "builtin:code",
    "data_size": 20,
    "epochs": 1,
    "batch_size": 4,
    "seq_len": 128,
    "method": "full",
    "replay_data": "builtin:self-samples",
}


def test_grid_axis_expands_to_three_runs_in_the_dry_run(tmp_path: Path) -> None:
    """20 examples at batch 4: 5 steps; + round(20·0.1/0.9) = 2 replay: 22, 6 steps; + round(20·0.3/0.7) = 9: 29,
    8 steps (× 4 × 128 tokens)."""
    study = tmp_path / "s.yaml"
    study.write_text(yaml.safe_dump({"base": BASE, "grid": {"replay_fraction": [0, 0.1, 0.3]}}))
    result = CliRunner().invoke(main, ["study", str(study), "-o", str(tmp_path / "out"), "--dry-run"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("study 's': 3 runs")
    rows = [line.split() for line in lines[2:5]]
    assert [row[0].rsplit("-", 1)[0] for row in rows] == ["replay0", "replay0.1", "replay0.3"]
    assert [(row[2], row[3]) for row in rows] == [("5", "2,560"), ("6", "3,072"), ("8", "4,096")]
    assert not (tmp_path / "out").exists()


def test_replay_fraction_zero_is_named_as_the_run_without_replay() -> None:
    plain = {k: v for k, v in BASE.items() if k != "replay_data"}
    without = parse_study({"base": plain, "grid": {"seed": [0]}}, "a.yaml").runs[0]
    zero = parse_study({"base": {**BASE, "replay_fraction": 0}, "grid": {"seed": [0]}}, "b.yaml").runs[0]
    some = parse_study({"base": {**BASE, "replay_fraction": 0.1}, "grid": {"seed": [0]}}, "c.yaml").runs[0]
    assert zero.name == without.name  # same identity, so the same hash
    assert some.name != without.name


def test_replay_preset_dry_run(tmp_path: Path) -> None:
    """128 examples + 0, 14, 55 replay sequences at batch 4: 32, 36, 46 steps, for full FT and LoRA."""
    for size in ("cpu", "full"):
        result = CliRunner().invoke(
            main, ["study", "--preset", "replay", "--size", size, "-o", str(tmp_path / size), "--dry-run"]
        )
        assert result.exit_code == 0, result.output
    result = CliRunner().invoke(main, ["study", "--preset", "replay", "-o", str(tmp_path / "c"), "--dry-run"])
    rows = [line.split() for line in result.stdout.splitlines()[2:8]]
    assert [row[0].rsplit("-", 1)[0] for row in rows] == [
        "full-lr5e-05-replay0",
        "full-lr5e-05-replay0.1",
        "full-lr5e-05-replay0.3",
        "lora-r16-a32-lr0.0005-replay0",
        "lora-r16-a32-lr0.0005-replay0.1",
        "lora-r16-a32-lr0.0005-replay0.3",
    ]
    assert [row[2] for row in rows] == ["32", "36", "46"] * 2
