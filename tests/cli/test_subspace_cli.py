"""`deltarank intruders`, `similarity` and `extract` through click's CliRunner, writing only under tmp_path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from safetensors.torch import load_file

from deltarank.analysis.tools.extract import ExtractResult
from deltarank.analysis.tools.intruders import IntruderResult
from deltarank.analysis.tools.similarity import SimilarityResult
from deltarank.cli import main
from tests.analysis.subspace_models import Q_PROJ, rotate_top, save_lora, save_tuned


@pytest.fixture
def dirs(tiny_model_dir: Path, tmp_path: Path) -> dict[str, Path]:
    """Base, a dense tuned copy with 2 planted intruders in q_proj of layer 0, and a LoRA adapter."""
    base_q = load_file(str(tiny_model_dir / "model.safetensors"))[Q_PROJ]
    tuned = save_tuned(tiny_model_dir, tmp_path / "full", {Q_PROJ: rotate_top(base_q, 2)})
    return {"base": tiny_model_dir, "full": tuned, "lora": save_lora(tmp_path / "lora", rank=4)}


def run(*args: object) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def test_intruders_command(dirs: dict[str, Path], tmp_path: Path) -> None:
    out, fig = tmp_path / "intr.json", tmp_path / "intr.png"
    code, stdout, stderr = run(
        "intruders", dirs["base"], dirs["full"], "-o", out, "--device", "cpu", "--figure", fig
    )
    assert code == 0, stderr
    result = IntruderResult.from_json(out)
    assert result.total() == 2 and result.by_layer("q_proj") == {0: 2, 1: 0}
    assert "2 intruders among the top 10 at ε = 0.5" in stdout
    assert fig.stat().st_size > 0
    code, _, _ = run(
        "intruders", dirs["base"], dirs["lora"], "-o", out, "--top-k", "3", "--epsilon", "0.9", "--force"
    )
    assert code == 0 and IntruderResult.from_json(out).top_k == 3


def test_similarity_command(dirs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "sim.json"
    code, stdout, stderr = run(
        "similarity",
        dirs["base"],
        dirs["lora"],
        dirs["lora"],
        "-o",
        out,
        "--sizes",
        "1,2,4,8",
        "--device",
        "cpu",
    )
    assert code == 0, stderr
    result = SimilarityResult.from_json(out)
    assert all(m.diagonal == pytest.approx([1.0] * 4, abs=1e-5) for m in result.matrices)
    assert result.matrices[0].tops_a == (1, 2, 4)  # clipped to the LoRA rank
    assert "φ(1,1)" in stdout and "1.000" in stdout


def test_extract_command(dirs: dict[str, Path], tmp_path: Path) -> None:
    target, fig = tmp_path / "adapter", tmp_path / "energy.pdf"
    args = ("extract", dirs["base"], dirs["lora"], "-o", target, "--device", "cpu")
    code, stdout, stderr = run(*args, "--energy", "0.9", "--figure", fig, "--base-model-name", "tiny")
    assert code == 0, stderr
    config = json.loads((target / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "tiny" and config["peft_type"] == "LORA"
    assert all(m.retained_energy >= 0.9 for m in ExtractResult.from_json(target).matrices)
    assert fig.is_file() and f"Wrote adapter {target}" in stdout
    code, _, stderr = run(*args, "--lora-rank", "2")
    assert code == 1 and stderr.startswith("Error:") and "--force" in stderr
    code, _, stderr = run(*args, "--lora-rank", "2", "--force")
    assert code == 0 and ExtractResult.from_json(target).r == 2


@pytest.mark.parametrize(
    ("args", "message", "code"),
    [
        (("extract", "{base}", "{lora}", "-o", "{tmp}/a"), "exactly one of --lora-rank and --energy", 2),
        (
            ("extract", "{base}", "{lora}", "-o", "{tmp}/a", "--energy", "1.5"),
            "--energy must lie in (0, 1]",
            2,
        ),
        (
            ("similarity", "{base}", "{lora}", "{full}", "--sizes", "1,x"),
            "expected comma-separated integers",
            2,
        ),
        (("similarity", "{base}", "{lora}", "{full}", "-o", "{tmp}/no/s.json"), "does not exist", 1),
        (("intruders", "{base}", "{tmp}/missing"), "no such file or directory", 1),
        (
            ("intruders", "{base}", "{full}", "-o", "{tmp}/i.json", "--include", "("),
            "not a valid regular expression",
            2,
        ),
    ],
)
def test_errors_are_one_line(
    dirs: dict[str, Path], tmp_path: Path, args: tuple[str, ...], message: str, code: int
) -> None:
    """Bad input exits 1, a usage mistake (a bad option value or combination) 2, like click's own."""
    values = {"base": dirs["base"], "lora": dirs["lora"], "full": dirs["full"], "tmp": tmp_path}
    status, _, stderr = run(*(a.format(**values) for a in args))
    assert status == code
    assert stderr.startswith("Error:") and message in stderr and len(stderr.strip().splitlines()) == 1
    assert not (tmp_path / "a").exists()


def test_bad_figure_suffix(dirs: dict[str, Path], tmp_path: Path) -> None:
    code, _, stderr = run(
        "intruders", dirs["base"], dirs["full"], "-o", tmp_path / "i.json", "--figure", "x.jpg"
    )
    assert code == 2 and "--figure" in stderr
    assert not (tmp_path / "i.json").exists()
