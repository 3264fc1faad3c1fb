"""The analysis commands' options and console (#24 finding 9, usage errors, console, `--force` overlap):
options that do not apply are refused (exit 2) or warned about, usage mistakes exit 2 for every command, a
log gets plain progress lines, several TUNED get labelled tables, and `--force` never replaces an input."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from deltarank.cli import main
from tests.conftest import build_tiny_llama, take_sgd_steps


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny Llama base and two short fine-tunes of it (Hugging Face directories)."""
    root = tmp_path_factory.mktemp("options")
    model = build_tiny_llama()
    model.save_pretrained(root / "base")
    for name, steps in (("one", 1), ("two", 2)):
        tuned = build_tiny_llama()
        take_sgd_steps(tuned, steps=steps, lr=0.01)
        tuned.save_pretrained(root / name)
    result = CliRunner().invoke(
        main, ["spectrum", str(root / "base"), str(root / "one"), "-o", str(root / "x.json")]
    )
    assert result.exit_code == 0, result.output
    return {"base": root / "base", "one": root / "one", "two": root / "two", "result": root / "x.json"}


def _run(*args: object) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def test_top_k_without_the_randomized_solver_is_a_usage_error(dirs: dict[str, Path], tmp_path: Path) -> None:
    for solver in ([], ["--solver", "svd"], ["--solver", "gram"]):
        result = _run(
            "spectrum", dirs["base"], dirs["one"], "-o", tmp_path / "s.json", "--top-k", "4", *solver
        )
        assert result.exit_code == 2, result.output
        assert result.stderr.startswith("Error: --top-k applies to --solver randomized only")
    assert not (tmp_path / "s.json").exists()
    done = _run(
        "spectrum",
        dirs["base"],
        dirs["one"],
        "-o",
        tmp_path / "s.json",
        "--top-k",
        "4",
        "--solver",
        "randomized",
    )
    assert done.exit_code == 0, done.output


def test_workers_that_do_not_apply_are_warned_about(dirs: dict[str, Path], tmp_path: Path) -> None:
    args = ["spectrum", dirs["base"], dirs["one"], "--device", "cpu", "--workers", "2"]
    warned = _run(*args, "-o", tmp_path / "svd.json", "--solver", "svd")
    assert warned.exit_code == 0, warned.output
    assert (
        "Warning: --workers 2 is ignored: it applies to the CPU Gram solver, and this run uses the svd "
        in (warned.stderr)
    )
    used = _run(*args, "-o", tmp_path / "gram.json", "--solver", "gram")
    assert used.exit_code == 0 and "--workers" not in used.stderr


def test_quantization_error_on_a_checkpoint_is_a_usage_error(dirs: dict[str, Path], tmp_path: Path) -> None:
    result = _run("spectrum", dirs["base"], dirs["one"], "-o", tmp_path / "s.json", "--quantization-error")
    assert result.exit_code == 2
    assert (
        f"--quantization-error applies to QLoRA adapters; {dirs['one']} is not a PEFT adapter"
        in result.stderr
    )
    assert not (tmp_path / "s.json").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["spectrum", "{base}", "{one}", "--thresholds", "0.5,x"], "--thresholds"),
        (["spectrum", "{base}", "{one}", "--solver", "randomized"], "needs --top-k"),
        (["spectrum", "{base}", "{one}", "{two}", "-o", "-"], "-o - (stdout) takes a single TUNED"),
        (["spectrum", "{base}", "{one}", "--include", "("], "not a valid regular expression"),
        (["intruders", "{base}", "{one}", "--epsilon", "2"], "--epsilon"),
        (["similarity", "{base}", "{one}", "{two}", "--sizes", "1,x"], "--sizes"),
        (["extract", "{base}", "{one}", "-o", "{tmp}/a"], "exactly one of --lora-rank and --energy"),
        (["extract", "{base}", "{one}", "--lora-rank", "2"], "Missing option '-o'"),
        (["plot", "{result}"], "Missing option '-o'"),
        (["plot", "{result}", "-o", "{tmp}/f", "--kind", "pie"], "unknown figure kind"),
        (["compare", "{result}", "--label", "a", "--label", "b"], "2 --label values for 1"),
        (["spectrum", "{base}", "{one}", "--no-such-option"], "No such option"),
    ],
)
def test_usage_mistakes_exit_2_in_every_command(
    dirs: dict[str, Path], tmp_path: Path, args: list[str], message: str
) -> None:
    """Exit status 2 for a usage error (docs/cli.md), whether click or deltarank finds it (before: 1 or 3)."""
    values = {**dirs, "tmp": tmp_path}
    result = _run(*(a.format(**values) for a in args))
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []


def test_progress_reaches_a_log_and_several_tuned_get_labelled_tables(
    dirs: dict[str, Path], tmp_path: Path
) -> None:
    result = _run("spectrum", dirs["base"], dirs["one"], dirs["two"], "-o", tmp_path / "spectra")
    assert result.exit_code == 0, result.output
    # stderr is not a terminal here: plain progress lines (the last one at 100%), no bar.
    assert re.search(r"^spectrum: 28/28 matrices \(100%\), \d+ s elapsed( \(.*\))?$", result.stderr, re.M), (
        result.stderr
    )
    assert "\r" not in result.stderr
    tables = result.stdout.split("\n\n") if "\n\n" in result.stdout else [result.stdout]
    assert f"{dirs['one']}:\nmodule" in result.stdout and f"{dirs['two']}:\nmodule" in result.stdout, tables
    assert result.stdout.index(f"{dirs['one']}:") < result.stdout.index(f"{dirs['two']}:")
    for command, args in (
        ("intruders", [dirs["base"], dirs["one"], "-o", tmp_path / "i.json"]),
        ("similarity", [dirs["base"], dirs["one"], dirs["two"], "-o", tmp_path / "sim.json"]),
        ("extract", [dirs["base"], dirs["one"], "-o", tmp_path / "adapter", "--lora-rank", "2"]),
    ):
        done = _run(command, *args)
        assert done.exit_code == 0, done.output
        assert re.search(rf"^{command}: (\d+)/\1 matrices \(100%\)", done.stderr, re.M), done.stderr
    quiet = _run("intruders", dirs["base"], dirs["one"], "-o", tmp_path / "q.json", "-q")
    assert quiet.exit_code == 0 and quiet.stderr == ""


def test_force_never_replaces_an_input(dirs: dict[str, Path], tmp_path: Path) -> None:
    before = {p.name: p.read_bytes() for p in dirs["one"].iterdir()}
    result = _run("extract", dirs["base"], dirs["one"], "-o", dirs["one"], "--lora-rank", "2", "--force")
    assert result.exit_code == 1
    assert (
        result.stderr.strip()
        == f"Error: -o {dirs['one']}: is the input {dirs['one']}; choose another output path"
    )
    assert {p.name: p.read_bytes() for p in dirs["one"].iterdir()} == before
    parent = _run(
        "extract", dirs["base"], dirs["one"], "-o", dirs["one"].parent, "--lora-rank", "2", "--force"
    )
    assert parent.exit_code == 1 and "contains the input" in parent.stderr
    inside = _run(
        "spectrum", dirs["base"], dirs["one"], "-o", tmp_path / "s.json", "--csv", dirs["one"] / "t.csv"
    )
    assert inside.exit_code == 1 and "--csv" in inside.stderr and "lies inside the input" in inside.stderr
    assert not (dirs["one"] / "t.csv").exists() and not (tmp_path / "s.json").exists()
