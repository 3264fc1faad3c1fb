"""One vocabulary across commands: `-o/--output` refused on an existing result unless `--force`, the same
exit statuses everywhere (1 bad input, 2 usage, 3 internal error, 130 interrupted), `-o -` for stdout,
`--device cuda:N`, `--quiet`."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from deltarank.cli import main
from tests.analysis.subspace_models import save_lora
from tests.figures.synthetic import full_result, lora_result

REFUSED = "already exists (use --force to replace it)"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny base model, a LoRA adapter of it, and two spectrum result files."""
    from tests.conftest import build_tiny_llama

    root = tmp_path_factory.mktemp("vocabulary")
    build_tiny_llama().save_pretrained(root / "base")
    save_lora(root / "lora", rank=2)
    full_result("runs/full", layers=2).to_json(root / "full.json")
    lora_result("runs/lora", rank=4, layers=2).to_json(root / "lora.json")
    return {
        "base": root / "base",
        "lora": root / "lora",
        "full_json": root / "full.json",
        "lora_json": root / "lora.json",
    }


def invoke(*args: object) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


# command -> (arguments before -o, the output to give -o: a file or a directory)
COMMANDS: dict[str, Callable[[dict[str, Path], Path], list[object]]] = {
    "spectrum": lambda i, out: ["spectrum", i["base"], i["lora"], "--device", "cpu", "-o", out],
    "intruders": lambda i, out: ["intruders", i["base"], i["lora"], "--device", "cpu", "-o", out],
    "similarity": lambda i, out: [
        "similarity",
        i["base"],
        i["lora"],
        i["lora"],
        "--device",
        "cpu",
        "-o",
        out,
    ],
    "extract": lambda i, out: [
        "extract",
        i["base"],
        i["lora"],
        "--lora-rank",
        "1",
        "--device",
        "cpu",
        "-o",
        out,
    ],
    "plot": lambda i, out: ["plot", i["full_json"], "--kind", "ranks", "--format", "svg", "-o", out],
    "compare": lambda i, out: ["compare", i["full_json"], i["lora_json"], "-o", out],
}
DIRECTORY_OUTPUTS = {"extract", "plot"}
# Commands whose work is mocked out in the exit-status tests (their real runs train a model).
RUNS: dict[str, Callable[[dict[str, Path], Path], list[object]]] = {
    "train": lambda i, out: [
        "train",
        "--model",
        i["base"],
        "--data",
        "builtin:code",
        "--method",
        "lora",
        "-o",
        out,
    ],
    "reproduce": lambda i, out: ["reproduce", "-o", out, "--device", "cpu"],
    "evaluate": lambda i, out: ["evaluate", "--model", i["base"], "--data", "builtin:code:test"],
}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_an_existing_output_is_refused_without_force_and_replaced_with_it(
    command: str, inputs: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / ("out" if command in DIRECTORY_OUTPUTS else "out.json")
    first = invoke(*COMMANDS[command](inputs, out))
    assert first.exit_code == 0, first.output
    target = out / "ranks_by_layer.svg" if command == "plot" else out
    snapshot = {
        p: p.read_bytes() for p in ([target] if target.is_file() else target.rglob("*")) if p.is_file()
    }
    refused = invoke(*COMMANDS[command](inputs, out))
    assert refused.exit_code == 1, refused.output
    assert refused.stderr.count("\n") == 1 and REFUSED in refused.stderr
    assert {p: p.read_bytes() for p in snapshot} == snapshot  # the old output is untouched
    replaced = invoke(*COMMANDS[command](inputs, out), "--force")
    assert replaced.exit_code == 0, replaced.output
    assert target.exists()


@pytest.mark.parametrize("command", [*COMMANDS, *RUNS])
def test_a_bad_option_value_is_a_usage_error(command: str, inputs: dict[str, Path], tmp_path: Path) -> None:
    result = invoke(*{**COMMANDS, **RUNS}[command](inputs, tmp_path / "x"), "--no-such-option")
    assert result.exit_code == 2
    assert "No such option" in result.stderr


@pytest.mark.parametrize(
    ("command", "target"),
    [
        ("spectrum", "deltarank.cli.spectrum.spectrum_many"),
        ("intruders", "deltarank.analysis.tools.intruders.intruders"),
        ("similarity", "deltarank.analysis.tools.similarity.similarity"),
        ("extract", "deltarank.analysis.tools.extract.extract"),
        ("plot", "deltarank.figures.render.render_figures"),
        ("compare", "deltarank.figures.tables.compare_table"),
        ("train", "deltarank.train.trainer.run_training"),
        ("reproduce", "deltarank.study.run.runner.run_study"),
        ("evaluate", "deltarank.evaluation.run.evaluate"),
    ],
)
def test_an_internal_error_exits_3_with_one_line_and_a_traceback_only_under_vv(
    command: str, target: str, inputs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("planted bug")

    monkeypatch.setattr(target, broken)
    args = {**COMMANDS, **RUNS}[command](inputs, tmp_path / "x")
    plain = invoke(*args)
    assert plain.exit_code == 3, plain.output
    assert (
        plain.stderr.strip()
        == "Error: internal error (RuntimeError: planted bug); run with -vv for the traceback"
    )
    verbose = CliRunner().invoke(main, ["-vv", *[str(a) for a in args]])
    assert verbose.exit_code == 3
    assert "Traceback" in verbose.stderr and "planted bug" in verbose.stderr


def test_a_failed_checkpoint_write_says_so_in_one_line_and_exits_1(
    inputs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torch.save on a full disk raises a RuntimeError from its archive writer (not an OSError): the user is told
    a file could not be written and how much disk is free, not 'internal error'. /dev/full fails every write
    with ENOSPC, as a full disk does."""
    import torch

    def saves_to_a_full_disk(*args: object, **kwargs: object) -> None:
        torch.save({"exp_avg": torch.zeros(10_000)}, "/dev/full")

    monkeypatch.setattr("deltarank.train.trainer.run_training", saves_to_a_full_disk)
    result = invoke(*RUNS["train"](inputs, tmp_path / "x"))
    assert result.exit_code == 1, result.output
    line = result.stderr.strip()
    assert line.startswith("Error: a file could not be written (") and "\n" not in line
    assert "inline_container" in line and line.endswith(
        "GiB free on the disk of the working directory; is the disk full?"
    )


def test_interrupted_exits_130(
    inputs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("deltarank.analysis.tools.intruders.intruders", interrupted)
    result = invoke(*COMMANDS["intruders"](inputs, tmp_path / "i.json"))
    assert result.exit_code == 130 and result.stderr.strip() == "Error: interrupted"


@pytest.mark.parametrize("command", ["spectrum", "intruders", "similarity"])
def test_dash_writes_the_json_result_to_stdout_and_the_table_to_stderr(
    command: str, inputs: dict[str, Path], tmp_path: Path
) -> None:
    result = invoke(*COMMANDS[command](inputs, "-"))
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    version = 2 if command == "similarity" else 1  # similarity/2: `top` became `sizes`
    assert data["schema"] == f"deltarank.{command}/{version}" and data["matrices"]
    assert "Wrote stdout" in result.stderr
    assert not list(tmp_path.iterdir())  # nothing written to disk


def test_quiet_prints_nothing_but_writes_the_result(inputs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "s.json"
    result = invoke(*COMMANDS["spectrum"](inputs, out), "--quiet")
    assert result.exit_code == 0 and result.stdout == "" and out.is_file()


@pytest.mark.parametrize("command", ["spectrum", "intruders", "similarity", "extract"])
def test_device_takes_cuda_n_and_refuses_unknown_names(
    command: str, inputs: dict[str, Path], tmp_path: Path
) -> None:
    args = [a for a in COMMANDS[command](inputs, tmp_path / "o") if a != "cpu"]
    at = args.index("--device")
    unknown = invoke(*args[: at + 1], "gpu", *args[at + 1 :])
    assert unknown.exit_code == 2 and "'gpu' is not one of auto, cpu, cuda, cuda:N" in unknown.stderr
    import torch

    if torch.cuda.is_available():  # pragma: no cover - depends on the machine
        return
    numbered = invoke(*args[: at + 1], "cuda:1", *args[at + 1 :])
    assert numbered.exit_code == 1
    assert "--device cuda:1 asked for, but no CUDA device is available" in numbered.stderr


def test_reproduce_refuses_an_existing_run_directory(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "summary.json").write_text("{}")
    result = invoke("reproduce", "-o", tmp_path / "run", "--device", "cpu")
    assert result.exit_code == 1 and "use --resume to continue it, or --force to replace it" in result.stderr
    assert (tmp_path / "run" / "summary.json").read_text() == "{}"


def test_shell_completion_completes_commands_and_options() -> None:
    import os
    import subprocess
    import sys

    def complete(words: str) -> list[str]:
        env = {**os.environ, "_DELTARANK_COMPLETE": "bash_complete", "COMP_WORDS": words}
        env["COMP_CWORD"] = str(len(words.split()) - (0 if words.endswith(" ") else 1))
        code = "import sys; from deltarank.cli import main; sys.argv[0] = 'deltarank'; main()"
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        return [line.split(",", 1)[1] for line in done.stdout.splitlines()]

    assert complete("deltarank spec") == ["spectrum"]
    assert "--device" in complete("deltarank spectrum --dev")
    assert complete("deltarank spectrum a b --device cu") == ["cuda"]


def test_train_help_is_the_method_registry() -> None:
    """`deltarank train -h`: --method's choices are the registry's methods, in its order, and each method
    section of the options is titled by the registry's methods it is for."""
    from deltarank.cli.train import SECTION_TITLES
    from deltarank.io.training_methods import METHOD_NAMES

    result = invoke("train", "-h")
    assert result.exit_code == 0, result.output
    assert f"--method [{'|'.join(METHOD_NAMES)}]" in result.output
    for title in ("lora / qlora:", "prompt / prefix / ptuning:", "adapter (bottleneck adapter):"):
        assert f"\n{title}\n" in result.output
    assert all(f"\n{title}:\n" in result.output for title in SECTION_TITLES.values())
