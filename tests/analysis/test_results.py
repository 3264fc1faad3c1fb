"""Result records: JSON round trip, CSV rows, atomic writes that never leave a partial or missing file."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import pytest

from deltarank.analysis.results.spectrum import SCHEMA, MatrixSpectrum, SkippedTensor, SpectrumResult
from deltarank.errors import InputError, OutputError
from deltarank.io import atomic as results
from deltarank.io.atomic import check_writable, write_atomic


def _matrix(name: str, layer: int | None, module: str, e90: int) -> MatrixSpectrum:
    return MatrixSpectrum(
        name=name,
        layer=layer,
        module=module,
        shape=(4, 3),
        kind="dense",
        singular_values=(4.0, 2.0, 0.5),
        ranks={"energy_90": e90, "entropy": 2.25, "stable": 1.265625, "numerical": 3, "noise_floor": 2},
        delta_norm=4.5,
        base_norm=10.0,
        erased_fraction=0.25,
        random_energy_90=2,
        base_dtype="BF16",
        tuned_dtype="BF16",
        noise_edge=1.0,
        at_noise_level=False,
    )


def _result() -> SpectrumResult:
    return SpectrumResult(
        base="base.safetensors",
        tuned="tuned",
        device="cpu",
        precision="float32",
        thresholds=(0.5, 0.9, 0.99),
        matrices=(
            _matrix("model.layers.0.self_attn.q_proj.weight", 0, "q_proj", 2),
            _matrix("model.layers.1.self_attn.q_proj.weight", 1, "q_proj", 3),
            _matrix("lm_head.weight", None, "lm_head", 1),
        ),
        skipped=(SkippedTensor("model.layers.0.mlp.up_proj.weight", "missing in tuned checkpoint"),),
        deltarank_version="0.1.0",
    )


def test_json_round_trip_through_a_file(tmp_path: Path) -> None:
    original = _result()
    path = tmp_path / "spectrum.json"
    original.to_json(path)
    loaded = SpectrumResult.from_json(path)
    assert loaded == original
    data = json.loads(path.read_text())
    assert next(iter(data)) == "schema" and data["schema"] == SCHEMA == "deltarank.spectrum/1"
    assert data["matrices"][2]["layer"] is None
    assert data["matrices"][0]["shape"] == [4, 3]
    assert data["skipped"] == [
        {"name": "model.layers.0.mlp.up_proj.weight", "reason": "missing in tuned checkpoint"}
    ]


def test_json_round_trip_from_text() -> None:
    original = _result()
    assert SpectrumResult.from_json(original.to_json()) == original


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("not json at all", "not a JSON result file"),
        ('{"schema": "other/1"}', "not a deltarank.spectrum/1 result file"),
    ],
)
def test_from_json_refuses_other_files(tmp_path: Path, content: str, problem: str) -> None:
    path = tmp_path / "x.json"
    path.write_text(content)
    with pytest.raises(InputError, match=problem):
        SpectrumResult.from_json(path)


def test_csv_has_one_row_per_matrix(tmp_path: Path) -> None:
    path = tmp_path / "spectrum.csv"
    _result().to_csv(path)
    rows = list(csv.DictReader(io.StringIO(path.read_text())))
    assert len(rows) == 3
    assert rows[0]["name"] == "model.layers.0.self_attn.q_proj.weight"
    assert (rows[0]["rows"], rows[0]["cols"], rows[0]["energy_90"], rows[1]["energy_90"]) == (
        "4",
        "3",
        "2",
        "3",
    )
    assert rows[2]["layer"] == ""  # None
    assert {"entropy", "stable", "numerical", "noise_floor", "lora_rank"} <= set(rows[0])


def test_by_module_groups_in_first_seen_order() -> None:
    groups = _result().by_module()
    assert list(groups) == ["q_proj", "lm_head"]
    assert [m.layer for m in groups["q_proj"]] == [0, 1]


def test_atomic_write_keeps_the_old_file_when_the_rename_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "spectrum.json"
    path.write_text("old result")

    def fail(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(results.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        _result().to_json(path)
    assert path.read_text() == "old result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spectrum.json"]  # no temp file left


def test_atomic_write_keeps_the_old_file_when_writing_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "spectrum.csv"
    path.write_text("old,csv\n")

    def fail(fd: int) -> None:
        raise OSError("I/O error")

    monkeypatch.setattr(results.os, "fsync", fail)
    with pytest.raises(OSError, match="I/O error"):
        _result().to_csv(path)
    assert path.read_text() == "old,csv\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spectrum.csv"]


def test_atomic_write_gives_the_usual_permissions(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        write_atomic(tmp_path / "out.json", "{}")
    finally:
        os.umask(old)
    assert (tmp_path / "out.json").stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600


def test_check_writable_refuses_missing_directory_and_directories(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="does not exist"):
        check_writable(tmp_path / "missing" / "out.json")
    with pytest.raises(OutputError, match="is a directory"):
        check_writable(tmp_path)
    assert check_writable(tmp_path / "out.json") == tmp_path / "out.json"


@pytest.mark.parametrize(
    ("delta_norm", "e90", "random90", "expected"),
    [
        (0.5, 1, 2, None),  # a fine-tune: 5% of ‖W‖, half the Gaussian reference's rank
        (2.0, 2, 3, None),  # 20% of ‖W‖, ranks two thirds of the reference
        (6.0, 1, 2, "the median ‖ΔW‖/‖W‖ is 0.6 (fine-tunes: ~0.001-0.1): are these the same base model?"),
        (
            2.0,
            2,
            2,
            "the median ‖ΔW‖/‖W‖ is 0.2 (fine-tunes: ~0.001-0.1) and the ranks sit at the Gaussian reference "
            "(median energy_90 100% of it): are these the same base model?",
        ),
        (0.5, 2, 2, None),  # at the Gaussian reference but a change of 5%: a noisy update, not another model
    ],
)
def test_different_base_from_the_tensors(
    delta_norm: float, e90: int, random90: int, expected: str | None
) -> None:
    """#24 finding 7: a large median ‖ΔW‖/‖W‖ (> 0.5), or Gaussian ranks with a change ≥ 0.1, is flagged."""
    from dataclasses import replace

    from deltarank.analysis.results.spectrum import different_base

    records = [
        replace(
            _matrix(f"model.layers.{i}.mlp.up_proj.weight", i, "up_proj", e90),
            delta_norm=delta_norm,
            random_energy_90=random90,
        )
        for i in range(3)
    ]
    assert different_base(records) == expected
    result = SpectrumResult("b", "t", "cpu", "float32", (0.9,), tuple(records), different_base=expected)
    assert SpectrumResult.from_json(result.to_json()).different_base == expected  # in the file
    assert (
        (expected in result.warnings()) if expected else not any("same base" in w for w in result.warnings())
    )
