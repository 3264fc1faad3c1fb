"""`deltarank plot` end to end through click: files written, options honoured, errors as one line."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from deltarank.cli import main
from tests.figures.synthetic import (
    extract_result,
    full_result,
    intruder_result,
    lora_result,
    planted_result,
    similarity_result,
    write_summary,
)


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
        (
            ["plot", str(not_result), "-o", str(tmp_path)],
            "schema 'something/else'); known schemas: deltarank",
        ),
        (["plot", str(full), "-o", str(tmp_path), "--kind", "ratio"], "needs a LoRA rank"),
        (["plot", str(full), "-o", str(tmp_path), "--format", "gif"], "unknown figure format 'gif'"),
        (["plot", str(full), "-o", str(tmp_path), "--kind", "pie"], "unknown figure kind 'pie'"),
        (["plot", str(full), "-o", str(tmp_path), "--label", "a", "--label", "b"], "2 --label values for 1"),
        (["plot", "-o", str(tmp_path)], "nothing to plot"),
        (["plot", str(full), "-o", str(tmp_path), "--summary", str(full)], "not a deltarank.reproduce/1"),
    ]
    usage = ("unknown figure format", "unknown figure kind", "--label values for")  # usage errors exit 2
    for args, message in cases:
        result = CliRunner().invoke(main, args)
        assert result.exit_code == (2 if any(u in message for u in usage) else 1), (args, result.output)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], lines
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full.json", "lora.json", "summary.json", "x.json"]


def test_plot_help_lists_the_figures() -> None:
    result = CliRunner().invoke(main, ["plot", "--help"])
    assert result.exit_code == 0
    for word in ("--kind", "--summary", "--lora-rank", "--x-axis", "headline", "learning_forgetting"):
        assert word in result.output


def _write_subspace(tmp_path: Path) -> dict[str, Path]:
    """Intruder results of two runs, one similarity result, two extract results (one as an adapter directory)."""
    paths = {name: tmp_path / f"{name}.json" for name in ("i_full", "i_lora", "sim", "x_full")}
    intruder_result("full", 0.2).to_json(paths["i_full"])
    intruder_result("lora", 0.2).to_json(paths["i_lora"])
    similarity_result().to_json(paths["sim"])
    extract_result().to_json(paths["x_full"])
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    extract_result().to_json(adapter / "deltarank_extract.json")
    return paths | {"x_dir": adapter}


def test_plot_every_family_at_once(tmp_path: Path) -> None:
    full, lora, _ = _write(tmp_path)
    sub = _write_subspace(tmp_path)
    out = tmp_path / "figs"
    files = [full, lora, sub["i_full"], sub["sim"], sub["i_lora"], sub["x_full"], sub["x_dir"]]
    labels = ["full", "lora", "full", "lora vs full", "lora", "energy 0.9", "again"]
    args = ["plot", *map(str, files), "-o", str(out), "--format", "png"]
    result = CliRunner().invoke(main, [*args, *[x for label in labels for x in ("--label", label)]])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [str(out / f"{stem}.png") for stem in [
        "spectra", "ranks_by_layer", "headline", "intruders_by_layer", "similarity",
        "retained_energy-energy_0.9", "retained_energy-again",
    ]]  # fmt: skip
    assert all(path.stat().st_size > 10_000 for path in out.iterdir())
    again = CliRunner().invoke(main, args)  # every stem is checked before drawing: nothing replaced
    assert again.exit_code == 1 and "already exists (use --force to replace it)" in again.output


def test_plot_each_subspace_family_alone(tmp_path: Path) -> None:
    sub = _write_subspace(tmp_path)
    cases = [
        ([sub["i_full"], sub["i_lora"]], "intruders", ["intruders_by_layer.svg"]),
        ([sub["sim"]], "all", ["similarity.svg"]),
        ([sub["x_dir"]], "energy", ["retained_energy.svg"]),
        ([sub["x_full"], sub["x_dir"]], "all", ["retained_energy-full.svg", "retained_energy-full_2.svg"]),
    ]
    for index, (files, kind, names) in enumerate(cases):
        out = tmp_path / f"o{index}"
        args = ["plot", *map(str, files), "-o", str(out), "--kind", kind, "--format", "svg"]
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, (kind, result.output)
        assert sorted(p.name for p in out.iterdir()) == names
        assert all(p.read_text().startswith("<?xml") for p in out.iterdir())


def test_plot_a_kind_without_its_family_is_one_line(tmp_path: Path) -> None:
    full, _, _ = _write(tmp_path)
    sub = _write_subspace(tmp_path)
    cases = [
        ([full], "similarity", "figure 'similarity' needs a deltarank.similarity/2 result file"),
        ([sub["sim"]], "intruders", "figure 'intruders' needs a deltarank.intruders/1 result file"),
        ([sub["i_full"]], "energy", "figure 'energy' needs a deltarank.extract/1 result file"),
        ([sub["x_full"]], "ranks", "figure 'ranks' needs a deltarank.spectrum/1 result file"),
    ]
    for files, kind, message in cases:
        result = CliRunner().invoke(
            main, ["plot", *map(str, files), "-o", str(tmp_path / "o"), "--kind", kind]
        )
        assert result.exit_code == 1
        assert result.output.strip() == f"Error: {message}", result.output
    assert not (tmp_path / "o").exists()
