"""`deltarank compare`: the terminal table and its CSV twin."""

from __future__ import annotations

import csv
from pathlib import Path

from click.testing import CliRunner

from deltarank.cli import main
from tests.figures.synthetic import energy_90_by_hand, marchenko_pastur_sigma, planted_result


def _write(tmp_path: Path) -> tuple[Path, Path]:
    full, lora = tmp_path / "full.json", tmp_path / "lora.json"
    planted_result("runs/full", {"q_proj": 224, "k_proj": 100}, noise={"q_proj": 200, "k_proj": 90}).to_json(
        full
    )
    planted_result("runs/lora", {"q_proj": 14, "k_proj": 10}, noise={"q_proj": 16, "k_proj": 16}).to_json(
        lora
    )
    return full, lora


def test_compare_table_ratio_to_first_run(tmp_path: Path) -> None:
    full, lora = _write(tmp_path)
    result = CliRunner().invoke(main, ["compare", str(full), str(lora)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split()[-1] == "lora/full"
    gauss = str(energy_90_by_hand(marchenko_pastur_sigma(256, 256)))  # 131: r0.9 of a 256 × 256 Gaussian
    assert lines[2].split() == ["q_proj", "256", gauss, "224", "200", "14", "16", "0.06x"]
    assert lines[3].split() == ["k_proj", "256", gauss, "100", "90", "10", "16", "0.10x"]
    # medians over both matrices: (224 + 100)/2, (200 + 90)/2, (14 + 10)/2; 12/162 = 0.074
    assert lines[4].split() == ["all", "256", gauss, "162", "145", "12", "16", "0.07x"]
    assert len(lines) == 5


def test_compare_lora_rank_labels_and_csv(tmp_path: Path) -> None:
    full, lora = _write(tmp_path)
    out = tmp_path / "table.csv"
    args = ["compare", str(full), str(lora), "--lora-rank", "16", "--label", "FT", "--label", "LoRA"]
    result = CliRunner().invoke(main, [*args, "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[2].split()[-2:] == ["14.0x", "0.88x"]
    rows = list(csv.DictReader(out.open()))
    assert [r["module"] for r in rows] == ["q_proj", "k_proj", "all"]
    assert rows[0]["FT e90"] == "224.0" and rows[0]["FT/r"] == "14.0" and rows[0]["LoRA/r"] == "0.875"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full.json", "lora.json", "table.csv"]


def test_compare_errors(tmp_path: Path) -> None:
    full, _ = _write(tmp_path)
    cases = [
        (["compare", str(tmp_path / "missing.json")], "missing.json: "),
        (["compare", str(full), "-o", str(tmp_path / "no" / "t.csv")], "does not exist"),
        (["compare", str(full), "--label", "a", "--label", "b"], "2 --label values for 1"),
    ]
    for args, message in cases:
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 1, (args, result.output)
        assert result.output.strip().startswith("Error: ") and message in result.output, result.output
    assert CliRunner().invoke(main, ["compare"]).exit_code == 2  # click usage error: no file given
