"""Command-line help: `deltarank -h` lists the commands under four headings without importing them (or torch);
every option of every command (train's generated ones too) has a help text and a metavar that says what it
takes; no help sends the reader to a module; every range shown in `-h` but checked by the command is refused
past its bounds, with the command's one Error line."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from deltarank.cli import SUBCOMMANDS, main
from deltarank.cli.options import CheckedFloatRange, CheckedIntRange

HEADINGS = ["Analyse", "Train", "Evaluate", "Report"]
CLICK_TYPE_NAMES = {"TEXT", "INTEGER", "FLOAT", "INTEGER RANGE", "FLOAT RANGE"}
MENTIONS_A_PATH = re.compile(r"\b(path|file|files|directory|dir|output)\b", re.IGNORECASE)
MODULE_PATH = re.compile(r"\bdeltarank\.[a-z_]+")


def invoke(*args: object) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def group_context() -> click.Context:
    """The group's context as `deltarank` makes it: with -h (click caches a command's help option from the first
    context that asks for it, so a context without the group's settings would take -h away)."""
    return click.Context(main, info_name="deltarank", **main.context_settings)


def commands() -> dict[str, click.Command]:
    group = group_context()
    loaded = {name: main.get_command(group, name) for name in main.list_commands(group)}
    return {name: command for name, command in loaded.items() if command is not None}


def options() -> list[tuple[str, click.Option]]:
    """(command, option) for every option of every command, `-h` included."""
    group = group_context()
    found = []
    for name, command in commands().items():
        ctx = click.Context(command, info_name=name, parent=group)
        found += [(name, p) for p in command.get_params(ctx) if isinstance(p, click.Option)]
    return found


def metavar(name: str, option: click.Option) -> str:
    ctx = click.Context(commands()[name], info_name=name, parent=group_context())
    return option.make_metavar(ctx)


def test_every_command_is_listed_once_under_the_four_headings_in_order() -> None:
    result = invoke("-h")
    assert result.exit_code == 0, result.output
    sections: dict[str, list[str]] = {}
    current = None
    for line in result.output.splitlines():
        if line.endswith(":") and not line.startswith(" "):
            current = line[:-1]
            sections[current] = []
        elif current in HEADINGS and line.startswith("  ") and line.strip():
            sections[current].append(line.split()[0])
    assert [title for title in sections if title in HEADINGS] == HEADINGS
    assert "Commands" not in sections and "Other commands" not in sections
    assert sections == {
        "Options": [],
        "Analyse": ["spectrum", "intruders", "similarity", "placement", "recommend", "extract"],
        "Train": ["train"],
        "Evaluate": ["evaluate", "study", "reproduce"],
        "Report": ["plot", "compare"],
    }
    listed = [name for title in HEADINGS for name in sections[title]]
    assert sorted(listed) == sorted(SUBCOMMANDS)


def test_each_listed_summary_is_the_one_click_makes_of_the_command() -> None:
    """The summaries are read from the sources without importing the commands; they must be what click would
    show from the imported command (80 columns: 74 − len('similarity') characters)."""
    lines = invoke("-h").output.splitlines()
    for name, command in commands().items():
        row = next(line for line in lines if line.split()[:1] == [name])
        assert row.split(None, 1)[1] == command.get_short_help_str(80 - 6 - len("similarity")), name


def test_listing_the_commands_imports_neither_torch_nor_a_command() -> None:
    code = (
        "import sys\nfrom deltarank.cli import main\ntry:\n    main(['-h'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('deltarank.cli.')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Analyse:" in done.stdout
    assert done.stdout.splitlines()[-1] == "[]"


def test_every_option_of_every_command_has_help() -> None:
    found = options()
    assert {name for name, _ in found} == set(SUBCOMMANDS)
    assert len([1 for name, _ in found if name == "train"]) > 60  # train's generated options are walked too
    missing = [f"{name} {option.opts[0]}" for name, option in found if not (option.help or "").strip()]
    assert missing == []


def test_no_option_shows_a_bare_click_type_as_its_metavar() -> None:
    """A path or file option never reads TEXT; no option reads TEXT, INTEGER, FLOAT or click's '... RANGE'."""
    taking = [(name, o) for name, o in options() if not (o.is_flag or o.count)]
    pathlike = [(n, o) for n, o in taking if MENTIONS_A_PATH.search(" ".join([*o.opts, o.help or ""]))]
    assert len(pathlike) > 20
    assert [f"{n} {o.opts[0]}" for n, o in pathlike if metavar(n, o) == "TEXT"] == []
    assert [f"{n} {o.opts[0]}: {metavar(n, o)}" for n, o in taking if metavar(n, o) in CLICK_TYPE_NAMES] == []


@pytest.mark.parametrize(
    ("command", "option", "shown"),
    [
        ("spectrum", "--output", "PATH"),
        ("spectrum", "--csv", "FILE"),
        ("spectrum", "--workers", "N"),
        ("spectrum", "--thresholds", "LIST"),
        ("spectrum", "--include", "REGEX"),
        ("intruders", "--epsilon", "X"),
        ("similarity", "--output", "FILE"),
        ("similarity", "--figure", "FILE"),
        ("extract", "--energy", "X"),
        ("evaluate", "--data", "PATH"),
        ("study", "--preset", "NAME"),
        ("reproduce", "--seed", "N"),
        ("train", "--model", "PATH"),
        ("train", "--data", "PATH"),
        ("train", "--output", "PATH"),
        ("train", "--lora-rank", "N"),
        ("train", "--lr", "X"),
        ("train", "--target-modules", "LIST"),
        ("train", "--lora-rank-pattern", "JSON"),
        ("train", "--lora-alpha-pattern", "JSON"),
    ],
)
def test_metavars_say_what_an_option_takes(command: str, option: str, shown: str) -> None:
    result = invoke(command, "-h")
    line = re.compile(rf"\s+(-\w, )?{option}(, [-\w]+)* {re.escape(shown)}\b")
    assert any(line.match(text) for text in result.output.splitlines()), result.output


def test_no_help_sends_the_reader_to_a_module() -> None:
    for name in SUBCOMMANDS:
        result = invoke(name, "-h")
        assert result.exit_code == 0, result.output
        assert MODULE_PATH.findall(result.output) == [], name
    assert MODULE_PATH.findall(invoke("-h").output) == []


def test_train_data_help_lists_the_record_shapes_and_every_builtin_set() -> None:
    from deltarank.train.builtin_data import DATASETS

    text = " ".join(invoke("train", "-h").output.split()).replace("- ", "-")  # undo click's wrapping
    assert '{"prompt","completion"}' in text and '{"text"} records' in text and '{"messages"}' in text
    assert all(f"builtin:{name}" in text for name in DATASETS)


def test_the_options_left_without_help_before_have_it() -> None:
    for command, option, words in [
        ("intruders", "--epsilon", "Cosine threshold ε"),
        ("extract", "--dtype", "dtype of the adapter's saved A and B"),
        ("reproduce", "--domain", "Training data of both runs: builtin:code"),
        ("reproduce", "--seed", "Training seed of both runs"),
    ]:
        text = " ".join(invoke(command, "-h").output.split())
        assert re.search(rf"{option} \S+ {re.escape(words)}", text), (command, option)


# Each option with a range that -h shows and the command checks itself: the arguments that reach the check
# (paths that need not exist: the check comes first), and the exit status of its refusal.
EVALUATE = ["evaluate", "--model", "m", "--data", "x.jsonl"]
DIVERSITY = [*EVALUATE, "--measure", "diversity"]
CHECKED: dict[tuple[str, str], tuple[list[str], int]] = {
    ("extract", "--lora-rank"): (["extract", "a", "b", "-o", "{tmp}/o"], 2),
    ("extract", "--energy"): (["extract", "a", "b", "-o", "{tmp}/o"], 2),
    ("similarity", "--merge-k"): (["similarity", "a", "b", "c", "-o", "{tmp}/s.json"], 2),
    ("similarity", "--density"): (["similarity", "a", "b", "c", "-o", "{tmp}/s.json"], 2),
    ("recommend", "--energy"): (["recommend", "a", "b", "-o", "{tmp}/o"], 2),
    ("recommend", "--budget"): (["recommend", "a", "b", "-o", "{tmp}/o"], 2),
    ("recommend", "--budget-rank"): (["recommend", "a", "b", "-o", "{tmp}/o"], 2),
    ("evaluate", "--limit"): (EVALUATE, 1),
    ("evaluate", "--max-new-tokens"): (EVALUATE, 1),
    ("evaluate", "--general-tokens"): (EVALUATE, 1),
    ("evaluate", "--general-samples"): (EVALUATE, 1),
    ("evaluate", "--diversity-samples"): (EVALUATE, 1),
    ("evaluate", "--seq-len"): (EVALUATE, 1),
    ("evaluate", "--timeout"): (EVALUATE, 2),
    ("evaluate", "--memory-mb"): (EVALUATE, 2),
    ("evaluate", "--temperature"): (DIVERSITY, 2),
    ("evaluate", "--top-p"): (DIVERSITY, 2),
}


def outside(kind: click.IntRange | click.FloatRange) -> list[float]:
    """A value just below the range and, where it has a maximum, one just above it."""
    step = 1 if isinstance(kind, click.IntRange) else 0.5
    values = []
    if kind.min is not None:
        values.append(kind.min if kind.min_open else kind.min - step)
    if kind.max is not None:
        values.append(kind.max if kind.max_open else kind.max + step)
    return values


def checked_options() -> list[tuple[str, click.Option]]:
    return [(n, o) for n, o in options() if isinstance(o.type, CheckedIntRange | CheckedFloatRange)]


def test_every_checked_range_outside_train_has_a_case() -> None:
    assert {(n, o.opts[0]) for n, o in checked_options() if n != "train"} == set(CHECKED)


@pytest.mark.parametrize(("command", "option"), sorted(CHECKED))
def test_a_value_past_a_shown_range_is_refused_by_the_command(
    command: str, option: str, tmp_path: Path
) -> None:
    found = next(o for n, o in checked_options() if (n, o.opts[0]) == (command, option))
    assert isinstance(found.type, click.IntRange | click.FloatRange)
    args, status = CHECKED[(command, option)]
    for value in outside(found.type):
        result = invoke(*(a.format(tmp=tmp_path) for a in args), option, f"{value:g}")
        errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
        assert result.exit_code == status, result.output
        assert len(errors) == 1 and "Traceback" not in result.output
        assert option in errors[0] or option[2:].replace("-", "_") in errors[0], errors[0]
    assert list(tmp_path.iterdir()) == []


def train_cases() -> list[tuple[str, str]]:
    from deltarank.train.config import TrainConfig

    names = {f.name for f in dataclasses.fields(TrainConfig)}
    return [(n, o.opts[0]) for n, o in checked_options() if n == "train" and o.name in names]


@pytest.mark.parametrize("option", [flag for _, flag in train_cases()])
def test_train_ranges_are_the_config_checks(option: str, tmp_path: Path) -> None:
    """Past a shown bound the config check refuses the flag (exit 2, naming the key); at a closed bound, or just
    inside an open one, the run gets past every config check to the missing model (exit 1)."""
    from deltarank.train.config import TrainConfig
    from deltarank.train.config_validation import option_methods

    found = next(o for n, o in checked_options() if n == "train" and o.opts[0] == option)
    assert isinstance(found.type, click.IntRange | click.FloatRange) and found.name is not None
    key = found.name
    methods = option_methods(TrainConfig, key) or ("full",)
    extra = {  # what the config needs beside the value: AdaLoRA's target ≤ its initial rank, replay's data
        "adalora_init_r": ["--adalora-target-rank", "1"],
        "replay_fraction": ["--replay-data", "builtin:code-raw"],
    }.get(key, [])
    args = ["train", "--model", tmp_path / "m", "--data", "d", "--method", methods[0], "-o", tmp_path / "o"]
    for value in outside(found.type):
        refused = invoke(*args, *extra, option, f"{value:g}")
        assert refused.exit_code == 2, refused.output
        assert key in refused.output.splitlines()[-1], refused.output
    kind, step = found.type, (1 if isinstance(found.type, click.IntRange) else 0.5)
    inside = [kind.min + step if kind.min_open else kind.min] if kind.min is not None else []
    inside += [kind.max - step if kind.max_open else kind.max] if kind.max is not None else []
    for value in inside:
        accepted = invoke(*args, *extra, option, f"{value:g}")
        assert accepted.exit_code == 1 and "model not found" in accepted.output, accepted.output
