"""`deltarank study` on the command line: --dry-run lists the runs, bad study files and a different study on an
existing directory are one-line errors with exit status 1."""

from __future__ import annotations

from pathlib import Path

import yaml
from click.testing import CliRunner

from deltarank.cli import main

BASE = {"model": "smollm2-135m", "data": "builtin:code", "max_steps": 10, "batch_size": 4, "seq_len": 128}


def write(path: Path, study: dict[str, object]) -> Path:
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


def test_dry_run_lists_the_runs_with_steps_tokens_and_an_estimate(tmp_path: Path) -> None:
    study = write(
        tmp_path / "s.yaml", {"base": BASE, "grid": {"method": ["full", "lora"], "data_size": [8, 16]}}
    )
    result = CliRunner().invoke(main, ["study", str(study), "-o", str(tmp_path / "out"), "--dry-run"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("study 's': 4 runs")
    assert result.stderr.splitlines() == [
        "study: not measured: accuracy for builtin:code (no closed-answer set: evaluate.accuracy names one)"
    ]
    listed = [line.split()[0] for line in lines[2:6]]
    assert [name.rsplit("-", 1)[0] for name in listed] == ["full-n8", "full-n16", "lora-n8", "lora-n16"]
    assert all(" pending " in line and " 5,120 " in line for line in lines[2:6])  # 10 steps × 4 × 128 tokens
    assert "estimated training time left: 2 min" in lines[-2]  # 4 × 5,120 tokens at 140 tokens/s: 146 s
    assert "estimated evaluation time left: not known" in lines[-1]
    assert not (tmp_path / "out").exists()


def test_presets_dry_run(tmp_path: Path) -> None:
    for preset in ("quick", "biderman", "belle"):
        result = CliRunner().invoke(
            main, ["study", "--preset", preset, "-o", str(tmp_path / preset), "--dry-run"]
        )
        assert result.exit_code == 0, result.output
    result = CliRunner().invoke(main, ["study", "--preset", "quick", "-o", str(tmp_path), "--dry-run"])
    assert "full " in result.output and "lora " in result.output and " 30,720 " in result.output


def test_unknown_key_names_the_closest_one(tmp_path: Path) -> None:
    study = write(tmp_path / "s.yaml", {"base": {**BASE, "lora_rnak": 8}, "grid": {"method": ["lora"]}})
    result = CliRunner().invoke(main, ["study", str(study), "-o", str(tmp_path / "out"), "--dry-run"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"Error: {study}: base: unknown key 'lora_rnak'; did you mean 'lora_r'?"
    ]


def test_a_different_study_on_an_existing_study_directory_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "study.yaml").write_text(yaml.safe_dump({"base": BASE, "grid": {"method": ["full"]}}))
    (out / "base").mkdir()
    study = write(tmp_path / "s.yaml", {"base": BASE, "grid": {"method": ["lora"]}})
    runner = CliRunner()
    result = runner.invoke(main, ["study", str(study), "-o", str(out)])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"Error: {out}: holds a different study (use --force to switch it to this study file; runs with "
        "unchanged settings are kept)"
    ]


def test_a_study_file_or_a_preset_not_both(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["study", "-o", str(tmp_path / "o")])
    assert result.exit_code == 1 and "give a STUDY_FILE or --preset NAME" in result.output
    result = CliRunner().invoke(main, ["study", "--preset", "quik", "-o", str(tmp_path / "o")])
    assert result.exit_code == 1 and "unknown preset 'quik'; did you mean 'quick'?" in result.output
