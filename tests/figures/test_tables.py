"""The `compare` table: median ranks per module type and ratios, as text and CSV."""

from __future__ import annotations

import pytest

from deltarank.analysis.results import SparsityProfile
from deltarank.errors import DeltarankError
from deltarank.figures.tables import compare_table
from tests.figures.synthetic import planted_result, with_sparsity


def _results():  # type: ignore[no-untyped-def]
    full = planted_result("runs/full", {"q_proj": 224, "k_proj": 100}, noise={"q_proj": 200, "k_proj": 90})
    lora = planted_result("runs/lora", {"q_proj": 14, "k_proj": 10}, noise={"q_proj": 16, "k_proj": 16})
    return full, lora


def test_ratio_to_the_first_run() -> None:
    table = compare_table(list(_results()))
    assert table.columns == (
        "module", "width", "gauss_e90", "full e90", "full noise", "lora e90", "lora noise", "lora/full",
    )  # fmt: skip
    rows = {row[0]: row for row in table.rows}
    assert list(rows) == ["q_proj", "k_proj", "all"]
    assert rows["q_proj"][1:7] == (256, rows["q_proj"][2], 224.0, 200.0, 14.0, 16.0)
    assert rows["q_proj"][7] == pytest.approx(14 / 224)
    assert rows["all"][3] == 162.0  # median of 224 and 100


def test_ratio_to_a_lora_rank_and_text_layout() -> None:
    full, _ = _results()
    table = compare_table(full, lora_rank=16)
    assert table.columns[-1] == "full/r"
    text = table.to_text().splitlines()
    assert text[0].split() == ["module", "width", "gauss_e90", "full", "e90", "full", "noise", "full/r"]
    assert set(text[1]) == {"-", " "}
    assert text[2].split()[-1] == "14.0x"
    assert text[3].split()[-1] == "6.2x"
    assert len({len(line) for line in text[:2]}) == 1  # aligned: header and rule have the same width


def test_csv_has_raw_numbers() -> None:
    table = compare_table(list(_results()))
    lines = table.to_csv().splitlines()
    assert lines[0] == "module,width,gauss_e90,full e90,full noise,lora e90,lora noise,lora/full"
    assert lines[1].startswith("q_proj,256,")
    assert lines[1].endswith(",224.0,200.0,14.0,16.0,0.0625")


def test_missing_values_and_errors() -> None:
    full, _ = _results()
    no_noise = planted_result("runs/x", {"q_proj": 10})
    bare = type(no_noise.matrices[0])(**{**no_noise.matrices[0].__dict__, "ranks": {"energy_90": 10.0}})
    result = type(no_noise)(**{**no_noise.__dict__, "matrices": (bare,)})
    table = compare_table([full, result])
    assert table.rows[0][6] is None  # x has no noise_floor rank
    assert table.to_text().splitlines()[2].split()[6] == "-"
    with pytest.raises(DeltarankError, match="positive"):
        compare_table(full, lora_rank=0)
    empty = type(full)(**{**full.__dict__, "matrices": ()})
    with pytest.raises(DeltarankError, match="holds no matrices"):
        compare_table(empty)


def test_sparsity_columns_when_a_result_has_a_profile() -> None:
    full, lora = _results()
    full = with_sparsity(full, lambda m: SparsityProfile(0.25, 0.5, 0.75, 1.0))
    lora = with_sparsity(lora, lambda m: SparsityProfile(0.0, 0.0, None, 0.0625))
    table = compare_table([full, lora])
    assert table.columns == (
        "module", "width", "gauss_e90", "full e90", "full noise", "lora e90", "lora noise",
        "full zero", "full atol", "full ulp/2", "full rank/width", "lora zero", "lora atol", "lora ulp/2", "lora rank/width",
        "lora/full",
    )  # fmt: skip
    rows = {row[0]: row for row in table.rows}
    assert rows["q_proj"][7:15] == (0.25, 0.5, 0.75, 1.0, 0.0, 0.0, None, 0.0625)
    assert rows["q_proj"][15] == pytest.approx(14 / 224)  # the ratio stays last
    text = table.to_text().splitlines()[2].split()
    assert text[7:15] == ["0.250", "0.500", "0.750", "1.000", "0.000", "0.000", "-", "0.062"]
    assert text[15] == "0.06x"
    assert "full zero" not in compare_table(list(_results())).columns  # no profile, no columns
