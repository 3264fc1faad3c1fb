"""`deltarank intruders BASE TUNED --mitigate λ -o DIR` through click's CliRunner, writing only under tmp_path."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from safetensors.torch import load_file

from deltarank.cli import main
from tests.analysis.subspace_models import Q_PROJ, rotate_top, save_lora, save_tuned


@pytest.fixture
def dirs(tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Base, a dense tuned copy with 2 planted intruders in q_proj of layer 0, a LoRA and a DoRA adapter; the
    working directory is tmp_path, so a default `intruders.json` written by mistake would be seen."""
    monkeypatch.chdir(tmp_path)
    base_q = load_file(str(tiny_model_dir / "model.safetensors"))[Q_PROJ]
    return {
        "base": tiny_model_dir,
        "full": save_tuned(tiny_model_dir, tmp_path / "full", {Q_PROJ: rotate_top(base_q, 2)}),
        "lora": save_lora(tmp_path / "lora"),
        "dora": save_lora(tmp_path / "dora", use_dora=True),
        "dora_saved": save_lora(tmp_path / "dora_saved", use_dora=True, modules_to_save=["lm_head"]),
    }


def run(*args: object) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def test_mitigate_dense_and_lora(dirs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "mitigated"
    code, stdout, stderr = run("intruders", dirs["base"], dirs["full"], "--mitigate", "0.5", "-o", out)
    assert code == 0, stderr
    assert "Wrote" in stdout and "2 intruder directions" in stdout and "λ = 0.5" in stdout
    assert {p.name for p in out.iterdir()} == {"config.json", "model.safetensors"}
    before, after = (
        load_file(str(dirs["full"] / "model.safetensors")),
        load_file(str(out / "model.safetensors")),
    )
    assert [n for n in before if not before[n].equal(after[n])] == [Q_PROJ]

    code, _, stderr = run("intruders", dirs["base"], dirs["lora"], "--mitigate", "0.5", "-o", out)
    assert code == 1 and "already exists" in stderr
    code, _, stderr = run(
        "intruders", dirs["base"], dirs["lora"], "--mitigate", "0", "-o", out, "--force", "--epsilon", "0.9"
    )
    assert code == 0, stderr
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in out.iterdir()}


def test_mitigate_dora_writes_the_merged_model(dirs: dict[str, Path], tmp_path: Path) -> None:
    """A DoRA adapter cannot hold a rescaled direction in its own form: the merged, mitigated model is written
    as a copy of BASE (its config and weights), every tensor BASE has and no adapter file."""
    out = tmp_path / "merged"
    code, _, stderr = run(
        "intruders", dirs["base"], dirs["dora"], "--mitigate", "0.5", "-o", out, "--epsilon", "0.9"
    )
    assert code == 0, stderr
    names = {p.name for p in out.iterdir()}  # BASE's files (its generation config too), no adapter file
    assert {"config.json", "model.safetensors"} <= names and not any(n.startswith("adapter") for n in names)
    base, written = (
        load_file(str(dirs["base"] / "model.safetensors")),
        load_file(str(out / "model.safetensors")),
    )
    assert written.keys() == base.keys()
    changed = {n for n in base if not base[n].equal(written[n])}
    assert changed and all(n.endswith(("q_proj.weight", "v_proj.weight", "up_proj.weight")) for n in changed)


@pytest.mark.parametrize(
    ("args", "message", "code"),
    [
        (("{full}", "--mitigate", "0.5"), "--mitigate needs -o DIR", 2),
        (("{full}", "--mitigate", "-1", "-o", "{tmp}/out"), "λ must be a finite number ≥ 0", 2),
        (("{full}", "--mitigate", "nan", "-o", "{tmp}/out"), "λ must be a finite number ≥ 0", 2),
        (("{full}", "--mitigate", "0.5", "-o", "-"), "cannot hold it", 2),
        (
            ("{dora_saved}", "--mitigate", "0.5", "-o", "{tmp}/out"),
            "tensors outside its ΔW (modules_to_save",
            1,
        ),
        (("{full}", "--mitigate", "0.5", "-o", "{full}", "--force"), "the input", 1),
    ],
)
def test_mitigate_errors_write_nothing(
    dirs: dict[str, Path], tmp_path: Path, args: tuple[str, ...], message: str, code: int
) -> None:
    values = {**dirs, "tmp": tmp_path}
    before = sorted(p.name for p in tmp_path.iterdir())
    status, _, stderr = run("intruders", dirs["base"], *(a.format(**values) for a in args))
    assert status == code
    assert stderr.startswith("Error:") and message in stderr and len(stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no intruders.json, no out, no temp dir
    assert load_file(str(dirs["full"] / "model.safetensors")).keys()  # the input is intact
