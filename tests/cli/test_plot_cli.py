"""`deltarank plot` end to end through click: files written, options honoured, errors as one line."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from deltarank.cli import main
from tests.figures.synthetic import full_result, lora_result, planted_result, write_summary


def _write(tmp_path: Path) -> tuple[Path, Path, Path]:
    full = tmp_path / "full.json"
    lora = tmp_path / "lora.json"
    full_result("runs/reproduce/full", layers=3).to_json(full)
    lora_result("runs/reproduce/lora", rank=4, layers=3).to_json(lora)
    return full, lora, write_summary(tmp_path / "summary.json")


def test_plot_all_like_make_figures(tmp_path: Path) -> None:
    full, lora, summary = _write(tmp_path)
    out = tmp_path / "figures" / "new"  # missing: created
    args = ["plot", str(full), str(lora), "--summary", str(summary), "-o", str(out), "--kind", "all"]
    result = CliRunner().invoke(main, [*args, "--format", "pdf,png"])
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in out.iterdir())
    stems = ["headline", "learning_forgetting", "ranks_by_layer", "spectra"]
    assert names == sorted(f"{s}.{f}" for s in stems for f in ("pdf", "png"))
    assert all((out / n).stat().st_size > 1000 for n in names)
    assert result.output.splitlines() == [str(out / n) for n in [
        "spectra.pdf", "spectra.png", "ranks_by_layer.pdf", "ranks_by_layer.png",
        "headline.pdf", "headline.png", "learning_forgetting.pdf", "learning_forgetting.png",
    ]]  # fmt: skip


def test_plot_one_kind_with_labels_and_lora_rank(tmp_path: Path) -> None:
    full, _, _ = _write(tmp_path)
    result = CliRunner().invoke(
        main, ["plot", str(full), "-o", str(tmp_path), "--kind", "ratio", "--format", "svg", "--lora-rank", "16",
               "--label", "full FT"]
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    svg = (tmp_path / "headline.svg").read_text()
    assert svg.startswith("<?xml")
    assert not (tmp_path / "spectra.svg").exists()


def test_plot_steps_from_checkpoints(tmp_path: Path) -> None:
    paths = []
    for step in (10, 20, 30):
        path = tmp_path / f"ck{step}.json"
        planted_result(f"runs/full/checkpoint-{step}", {"q_proj": step}).to_json(path)
        paths.append(str(path))
    result = CliRunner().invoke(
        main, ["plot", *paths, "-o", str(tmp_path / "o"), "--kind", "steps", "--format", "png"]
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "o" / "rank_over_training.png").stat().st_size > 0


def test_plot_user_errors_are_one_line(tmp_path: Path) -> None:
    full, _, _ = _write(tmp_path)
    not_result = tmp_path / "x.json"
    not_result.write_text('{"schema": "something/else"}')
    cases = [
        (["plot", str(not_result), "-o", str(tmp_path)], "not a deltarank.spectrum/1 result file"),
        (["plot", str(full), "-o", str(tmp_path), "--kind", "ratio"], "needs a LoRA rank"),
        (["plot", str(full), "-o", str(tmp_path), "--format", "gif"], "unknown figure format 'gif'"),
        (["plot", str(full), "-o", str(tmp_path), "--kind", "pie"], "unknown figure kind 'pie'"),
        (["plot", str(full), "-o", str(tmp_path), "--label", "a", "--label", "b"], "2 --label values for 1"),
        (["plot", "-o", str(tmp_path)], "nothing to plot"),
        (["plot", str(full), "-o", str(tmp_path), "--summary", str(full)], "not a deltarank.reproduce/1"),
    ]
    for args, message in cases:
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 1, (args, result.output)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], lines
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full.json", "lora.json", "summary.json", "x.json"]


def test_plot_help_lists_the_figures() -> None:
    result = CliRunner().invoke(main, ["plot", "--help"])
    assert result.exit_code == 0
    for word in ("--kind", "--summary", "--lora-rank", "--x-axis", "headline", "learning_forgetting"):
        assert word in result.output
