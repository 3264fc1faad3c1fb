"""`deltarank placement BASE TUNED -o DIR` through click's CliRunner: the directory holds placement.json and the
figure, whole or not at all; bad input is one line and nothing written; plot and compare read the result."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from safetensors.torch import load_file

from deltarank.analysis.results import PlacementResult, read_result
from deltarank.cli import main
from tests.analysis.subspace_models import Q_PROJ, planted_in_base, save_tuned


@pytest.fixture
def dirs(tiny_model_dir: Path, tmp_path: Path) -> dict[str, Path]:
    """Base, and a tuned copy whose layer-0 q_proj changed in the base's own top 3 (or bottom 3) directions."""
    stored = load_file(str(tiny_model_dir / "model.safetensors"))[Q_PROJ]
    out = {"base": tiny_model_dir}
    for where in ("top", "bottom"):
        tuned = stored.double() + planted_in_base(stored, [0.3, 0.3, 0.3], where)
        out[where] = save_tuned(tiny_model_dir, tmp_path / where, {Q_PROJ: tuned})
    return out


def run(*args: object) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def test_placement_command_writes_the_result_and_figure(dirs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ("placement", dirs["base"], dirs["top"], "-o", out, "--device", "cpu", "--sizes", "3,64")
    code, stdout, stderr = run(*args, "--format", "png,svg", "--top-k", "4")
    assert code == 0, stderr
    assert sorted(p.name for p in out.iterdir()) == ["placement.json", "placement.png", "placement.svg"]
    result = PlacementResult.from_json(out / "placement.json")
    assert read_result(out) == result  # the directory reads as its result file
    assert result.sizes == (3, 64) and result.sigma_top == 4
    q = next(m for m in result.matrices if m.name == Q_PROJ)
    for key in ("energy_90", "k3"):
        entry = q.at(key)
        assert entry is not None and entry.k == 3
        assert (entry.left_top, entry.left_bottom) == pytest.approx((1.0, 0.0), abs=1e-6)
        assert (entry.right_top, entry.right_bottom) == pytest.approx((1.0, 0.0), abs=1e-6)
    k64 = q.at("k64")
    assert k64 is not None and k64.k == 32 and k64.left_top == pytest.approx(1.0, abs=1e-6)  # clipped
    assert len(q.sigma_change) == 4
    # the table prints each share beside its chance level k/d (3/32 for q_proj)
    assert "k = r0.9 of ΔW" in stdout and "1.000 (0.094)" in stdout and "0.000 (0.094)" in stdout
    assert "Δσ1/σ1" in stdout and f"Wrote {out / 'placement.json'}" in stdout
    # an existing result is kept unless --force
    code, _, stderr = run(*args)
    assert code == 1 and stderr.startswith("Error:") and "--force" in stderr
    assert sorted(p.name for p in out.iterdir()) == ["placement.json", "placement.png", "placement.svg"]
    code, _, stderr = run(*args, "--force", "-q")
    assert code == 0, stderr
    assert sorted(p.name for p in out.iterdir()) == ["placement.json", "placement.pdf", "placement.png"]


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing", "no-such-model: no such file or directory"),
        ("sizes", "--sizes"),
        ("format", "unknown figure format"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(
    dirs: dict[str, Path], tmp_path: Path, case: str, message: str
) -> None:
    out = tmp_path / "out"
    tuned = tmp_path / "no-such-model" if case == "missing" else dirs["top"]
    extra = {"missing": [], "sizes": ["--sizes", "0,4"], "format": ["--format", "gif"]}[case]
    code, stdout, stderr = run("placement", dirs["base"], tuned, "-o", out, "--device", "cpu", *extra)
    assert code != 0
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:") and message in lines[0], stderr
    assert "Traceback" not in stdout + stderr
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base", "bottom", "top"]  # no temporary left


def test_plot_and_compare_read_placement_results(dirs: dict[str, Path], tmp_path: Path) -> None:
    outs = {}
    for where in ("top", "bottom"):
        outs[where] = tmp_path / f"p-{where}"
        code, _, stderr = run(
            "placement", dirs["base"], dirs[where], "-o", outs[where], "--device", "cpu", "-q"
        )
        assert code == 0, stderr
    figures = tmp_path / "figs"
    code, stdout, stderr = run(
        "plot", outs["top"], outs["bottom"] / "placement.json", "-o", figures, "--format", "svg",
        "--label", "top", "--label", "bottom",
    )  # fmt: skip
    assert code == 0, stderr
    assert sorted(p.name for p in figures.iterdir()) == ["placement-bottom.svg", "placement-top.svg"]
    code, stdout, stderr = run("compare", outs["top"], outs["bottom"], "--label", "top", "--label", "bottom")
    assert code == 0, stderr
    header, _, *rows = stdout.splitlines()
    assert "top top L" in header and "bottom bottom L" in header and "top chance L" in header
    q_row = next(row.split() for row in rows if row.startswith("q_proj"))
    # q_proj: the planted layer 0 and the unchanged layer 1 (no share): the median is layer 0's
    assert q_row[2:5] == ["1.000", "0.000", "0.094"]  # top run: top L, bottom L, chance L
    assert q_row[10:13] == ["0.000", "1.000", "0.094"]  # bottom run
