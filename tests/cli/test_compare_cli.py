"""`deltarank compare`: the terminal table and its CSV twin."""

from __future__ import annotations

import csv
from pathlib import Path

from click.testing import CliRunner

from deltarank.analysis.results import ExtractResult, MatrixExtract
from deltarank.cli import main
from tests.figures.synthetic import (
    energy_90_by_hand,
    intruder_result,
    marchenko_pastur_sigma,
    planted_result,
    similarity_result,
)


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
        (["compare", str(full), "-o", str(full), "--force"], f"-o {full}: is the input {full}"),
    ]
    kept = full.read_bytes()
    for args, message in cases:
        result = CliRunner().invoke(main, args)
        assert result.exit_code == (2 if "--label" in args else 1), (args, result.output)  # usage error: 2
        assert result.output.strip().startswith("Error: ") and message in result.output, result.output
    assert CliRunner().invoke(main, ["compare"]).exit_code == 2  # click usage error: no file given
    assert full.read_bytes() == kept  # --force never replaced the result being compared


def _rows(output: str) -> list[list[str]]:
    """The table's body rows, split on whitespace (header and rule left out)."""
    return [line.split() for line in output.splitlines()[2:]]


def test_compare_intruder_counts_per_run(tmp_path: Path) -> None:
    # layer L of every module type has L (full) or L + 1 (lora) top vectors at |cos| 0.2 < ε = 0.5
    full, lora, out = tmp_path / "full.json", tmp_path / "lora.json", tmp_path / "t.csv"
    intruder_result("full", 0.2).to_json(full)
    intruder_result("lora", 0.2).to_json(lora)
    result = CliRunner().invoke(main, ["compare", str(full), str(lora), "-o", str(out)])
    assert result.exit_code == 0, result.output
    header = result.output.splitlines()[0].split()
    assert header == ["module", "matrices", "full", "ε=0.5", "full", "max", "lora", "ε=0.5", "lora", "max"]
    assert _rows(result.output) == [
        ["q_proj", "3", "3", "2", "6", "3"],  # full 0 + 1 + 2, at most 2; lora 1 + 2 + 3, at most 3
        ["down_proj", "3", "3", "2", "6", "3"],
        ["up_proj", "3", "3", "2", "6", "3"],
        ["all", "9", "9", "2", "18", "3"],
    ]
    rows = list(csv.DictReader(out.open()))
    assert rows[-1] == {"module": "all", "matrices": "9", "full ε=0.5": "9", "full max": "2", "lora ε=0.5": "18",
                        "lora max": "3"}  # fmt: skip


def test_compare_similarity_mean_phi(tmp_path: Path) -> None:
    # φ = (layer + 1)/10 for layers 0, 1, 2; layer 2 of up_proj stores no j = 4
    path = tmp_path / "sim.json"
    similarity_result().to_json(path)
    result = CliRunner().invoke(main, ["compare", str(path), "--label", "L/F"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0].split() == ["module", "matrices", "L/F", "φ(1,1)", "L/F", "φ(4,4)"]
    assert _rows(result.output) == [
        ["q_proj", "3", "0.200", "0.200"],
        ["down_proj", "3", "0.200", "0.200"],
        ["up_proj", "3", "0.200", "0.150"],  # (0.1 + 0.2)/2
        ["all", "9", "0.200", "0.188"],  # (0.1 + 0.2 + 0.3)·2 + 0.1 + 0.2 over 8
    ]


def _extract(tuned: str, ranks: dict[str, list[int]], energy: float) -> ExtractResult:
    matrices = tuple(
        MatrixExtract(f"model.layers.{layer}.{module}.weight", layer, module, (16, 16), "dense", rank, energy,
                      (1.0,) * 16)
        for module, per_layer in ranks.items()
        for layer, rank in enumerate(per_layer)
    )  # fmt: skip
    return ExtractResult("base", tuned, "out", None, 0.9, 4, "float32", "float32", "cpu", matrices)


def test_compare_extract_rank_and_energy(tmp_path: Path) -> None:
    first, adapter = tmp_path / "a.json", tmp_path / "adapter"
    _extract("runs/full", {"q_proj": [2, 4, 9], "v_proj": [1, 1, 1]}, 0.9).to_json(first)
    adapter.mkdir()
    _extract("runs/dora", {"q_proj": [8, 8, 8], "v_proj": [3, 5, 5]}, 0.75).to_json(
        adapter / "deltarank_extract.json"
    )
    result = CliRunner().invoke(main, ["compare", str(first), str(adapter)])  # the adapter directory is read
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0].split() == ["module", "matrices", "full", "rank", "full", "energy", "dora",
                                                     "rank", "dora", "energy"]  # fmt: skip
    assert _rows(result.output) == [
        ["q_proj", "3", "4", "0.900", "8", "0.750"],  # median ranks
        ["v_proj", "3", "1", "0.900", "5", "0.750"],
        ["all", "6", "1.5", "0.900", "6.5", "0.750"],  # medians of 1, 1, 1, 2, 4, 9 and 3, 5, 5, 8, 8, 8
    ]


def test_compare_unknown_or_mixed_results_are_one_error_line(tmp_path: Path) -> None:
    full, _ = _write(tmp_path)
    intruders, odd = tmp_path / "i.json", tmp_path / "odd.json"
    intruder_result("full", 0.2).to_json(intruders)
    odd.write_text('{"schema": "deltarank.reproduce/1"}')
    cases = [
        ([odd], "schema 'deltarank.reproduce/1'); known schemas: deltarank.spectrum/1, deltarank.intruders/1, "
                "deltarank.similarity/2, deltarank.extract/1, deltarank.placement/1, "
                "deltarank.recommendation/1"),
        ([full, intruders], "compare reads one result family at a time; got deltarank.spectrum/1 and "
                            "deltarank.intruders/1 files"),
        ([intruders, "--lora-rank", "4"], "--lora-rank applies to deltarank.spectrum/1 results only"),
    ]  # fmt: skip
    for args, message in cases:
        result = CliRunner().invoke(main, ["compare", *map(str, args), "-o", str(tmp_path / "t.csv")])
        assert result.exit_code == (2 if "--lora-rank" in args else 1), result.output  # usage error: 2
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: ") and lines[0].endswith(message), lines
    assert not (tmp_path / "t.csv").exists()
