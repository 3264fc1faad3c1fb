"""`deltarank spectrum` writes the sparsity profile, `compare` shows its columns, `plot --kind sparsity` draws it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner, Result

from deltarank.cli import main
from tests.planting import plant, save_safetensors, scattered_changes

UP = "model.layers.0.mlp.up_proj.weight"


def _invoke(*args: object) -> Result:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 16 × 32 fp32 base (entries in [0.5, 1)); tuned: 25% moved by 1e-3, 25% by 1e-6, half unchanged."""
    root = tmp_path_factory.mktemp("sparsity-cli")
    generator = torch.Generator().manual_seed(0)
    base = {UP: (0.5 + 0.49 * torch.rand(16, 32, generator=generator, dtype=torch.float64)).float()}
    moved = {UP: scattered_changes((16, 32), {1e-3: 0.25, 1e-6: 0.25})}
    return {
        "base": save_safetensors(root / "base.safetensors", base),
        "tuned": save_safetensors(root / "tuned.safetensors", plant(base, moved, torch.float32)),
    }


def test_spectrum_writes_the_profile_and_compare_shows_it(
    checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    loose, tight = tmp_path / "loose.json", tmp_path / "tight.json"
    _invoke("spectrum", checkpoints["base"], checkpoints["tuned"], "-o", loose, "--device", "cpu", "-q")
    args = ["--sparsity-atol", "1e-7", "--device", "cpu", "-q"]
    _invoke("spectrum", checkpoints["base"], checkpoints["tuned"], "-o", tight, *args)
    data = json.loads(loose.read_text())
    assert data["sparsity_atol"] == 1e-5 and json.loads(tight.read_text())["sparsity_atol"] == 1e-7
    (record,) = data["matrices"]
    numerical = record["ranks"]["numerical"]
    assert record["sparsity"] == {
        "unchanged": 0.5,
        "within_atol": 0.75,
        "within_rounding": 0.5,
        "rank_fraction": numerical / 16,
    }
    table = _invoke("compare", loose, tight, "--label", "loose", "--label", "tight").output.splitlines()
    columns = [
        f"{label} {c}" for label in ("loose", "tight") for c in ("zero", "atol", "ulp/2", "rank/width")
    ]
    assert " ".join(table[0].split()).endswith(" ".join(columns) + " tight/loose")
    row = table[2].split()
    rank = f"{numerical / 16:.3f}"
    assert row[0] == "up_proj"
    assert row[7:15] == ["0.500", "0.750", "0.500", rank, "0.500", "0.500", "0.500", rank]  # 1e-6 > 1e-7


def test_spectrum_refuses_a_negative_tolerance(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["spectrum", str(checkpoints["base"]), str(checkpoints["tuned"]), "--sparsity-atol", "-1"]
    )
    assert result.exit_code == 2 and "--sparsity-atol" in result.output


def test_plot_kind_sparsity_from_a_spectrum_file(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "s.json"
    _invoke("spectrum", checkpoints["base"], checkpoints["tuned"], "-o", out, "--device", "cpu", "-q")
    printed = _invoke("plot", out, "-o", tmp_path / "figures", "--kind", "sparsity", "--format", "png").output
    assert printed.split() == [str(tmp_path / "figures" / "sparsity.png")]
