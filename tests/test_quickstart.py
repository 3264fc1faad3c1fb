"""The README's quick start works as written: its commands are run, at fewer steps, in a fresh directory.

The commands are read from the README's "## Quick start" section (its first ```bash block), so a wrong README
command fails here; every file the section names (in backticks, under runs/ or figures-quick/) must exist
afterwards, and the tables the README shows must have the columns that the commands print.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import click
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
STEPS = ("--max-steps", "10")
TEST_STEPS = ("--max-steps", "2")
ELIDED = "…"  # the README's mark for columns left out of a wide table
NAMED_FILE = re.compile(r"`((?:runs|figures-quick)/[^`\s]+)`")


def quick_start() -> str:
    """The text of the README's quick-start section."""
    text = README.read_text(encoding="utf-8")
    return text.split("\n## Quick start\n", 1)[1].split("\n## ", 1)[0]


def blocks(section: str, language: str) -> list[list[str]]:
    """The lines of each fenced block of `language` in `section`."""
    return [block.splitlines() for block in re.findall(rf"```{language}\n(.*?)```", section, re.S)]


def commands() -> list[list[str]]:
    """The `deltarank ...` commands of the quick start's first bash block, as argument lists."""
    lines = blocks(quick_start(), "bash")[0]
    return [shlex.split(line) for line in lines if line.startswith("deltarank ")]


def table_headers(lines: list[str]) -> list[list[str]]:
    """The column names of each table header (a line starting with `module`) in `lines`."""
    return [line.split() for line in lines if line.startswith("module ")]


def in_order(shown: list[str], printed: list[str]) -> bool:
    """True when the README's columns (elisions dropped) are the printed columns, in order, some left out."""
    rest = iter(printed)
    return all(column in rest for column in shown if column != ELIDED)


def test_quick_start_commands_use_real_options() -> None:
    """Each README command names a deltarank subcommand and only options it has (fast: nothing is run)."""
    from deltarank.cli import main

    found = commands()
    assert [args[1] for args in found] == ["train", "train", "spectrum", "spectrum", "compare", "plot"]
    assert all(" ".join(STEPS) in " ".join(args) for args in found if args[1] == "train")
    context = click.Context(main)
    for args in found:
        command = main.get_command(context, args[1])
        assert command is not None, args
        known = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
        used = {arg.split("=")[0] for arg in args[2:] if arg.startswith("-")}
        assert used <= known, (args[1], sorted(used - known))


@pytest.mark.slow
@pytest.mark.usefixtures("smollm2_gguf")
def test_quick_start_runs_as_written(tmp_path: Path) -> None:
    """Every command succeeds (train at 2 steps), every file named exists, the shown tables' columns are real."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    printed: dict[str, str] = {}
    for args in commands():
        line = " ".join(args[1:]).replace(" ".join(STEPS), " ".join(TEST_STEPS))
        done = subprocess.run(
            [sys.executable, "-m", "deltarank", *shlex.split(line)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert done.returncode == 0, f"{line}\n{done.stdout}\n{done.stderr}"
        printed[" ".join(args)] = done.stdout
    section = quick_start()
    named = set(NAMED_FILE.findall(section))
    assert {"runs/lora.json", "runs/full.json"} <= named, named
    assert any(name.startswith("figures-quick/") for name in named), named
    missing = sorted(name for name in named if not (tmp_path / name).exists())
    assert not missing, missing
    shown = [header for block in blocks(section, "text") for header in table_headers(block)]
    compare = next(out for cmd, out in printed.items() if cmd.startswith("deltarank compare "))
    compare_shown = [header for header in shown if "full/lora" in header]
    assert compare_shown, "the README shows no compare table"
    assert all(in_order(header, table_headers(compare.splitlines())[0]) for header in compare_shown)
    real = [header for out in printed.values() for header in table_headers(out.splitlines())]
    for header in shown:
        assert any(in_order(header, columns) for columns in real), header
