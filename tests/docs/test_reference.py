"""The documentation site's reference pages are generated from the code (deltarank.docsite), so they cannot drift.

Nothing generated is committed: these tests check what the generator makes from the code, and that it is made
from the classes it is given; the last one builds the whole site with `mkdocs build --strict` when MkDocs is
installed (the `docs` extra).
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest

import deltarank
from deltarank.analysis.results.read import FAMILIES
from deltarank.cli import SUBCOMMANDS, main
from deltarank.docsite.commands import command_page, option_names
from deltarank.docsite.markdown import anchor, attribute_docs, cell
from deltarank.docsite.pages import COMMAND_OUTPUTS, default_pages, format_name
from deltarank.docsite.study_keys import study_file_page
from deltarank.io.file_formats import FORMATS
from deltarank.study.design.evaluate_spec import EvaluateSpec
from deltarank.study.design.grid import RUN_KEYS
from deltarank.study.design.recommend_spec import SPEC_KEYS
from deltarank.study.design.study_file import STUDY_KEYS
from deltarank.train.config import TrainConfig
from deltarank.train.config_file import SECTIONS

REPO = Path(__file__).resolve().parents[2]
PACKAGE = Path(deltarank.__file__).parent
STUDY_OPTIONS = {
    "study_keys": STUDY_KEYS,
    "run_keys": RUN_KEYS,
    "recommend_keys": SPEC_KEYS,
    "config_sections": SECTIONS,
    "data_size": "data_size",
}


@pytest.fixture(scope="module")
def formats() -> dict[str, tuple[tuple[str, ...], str | None, bool]]:
    return dict(FORMATS)


@pytest.fixture(scope="module")
def pages(formats: dict[str, tuple[tuple[str, ...], str | None, bool]]) -> dict[str, str]:
    return default_pages(formats)


def _row_of(key: str, page: str) -> str:
    """The table row of a page whose first cell is the key `key` (as code)."""
    rows = [line for line in page.splitlines() if line.startswith(f"| `{key}` |")]
    assert rows, f"no row for {key!r}"
    return rows[0]


def test_study_file_page_lists_every_train_config_and_evaluate_key(pages: dict[str, str]) -> None:
    page = pages["study-file.md"]
    base = page.split("\n## base:")[1].split("\n## ")[0]
    evaluate = page.split("\n## evaluate:")[1]
    for item in dataclasses.fields(TrainConfig):
        row = _row_of(item.name, base)
        assert cell(item.metadata["help"]) in row, item.name
        assert item.metadata.get("section", "general") in row
    for item in dataclasses.fields(EvaluateSpec):
        row = _row_of(item.name, evaluate)
        assert cell(attribute_docs(EvaluateSpec)[item.name]) in row, item.name
    for key in (*STUDY_KEYS, *RUN_KEYS, *SPEC_KEYS):
        assert f"| `{key}` |" in page, key


def test_every_evaluate_key_is_documented() -> None:
    """The `evaluate:` page reads each key's help from EvaluateSpec's `Attributes:`: none may be missing."""
    documented = attribute_docs(EvaluateSpec)
    missing = [f.name for f in dataclasses.fields(EvaluateSpec) if not documented.get(f.name)]
    assert not missing, f"EvaluateSpec fields without an Attributes: entry: {missing}"


def test_the_study_file_page_is_made_from_the_classes_it_is_given() -> None:
    """A config class with one more field gets one more row: the generator reads the classes, not a copy."""
    extra_help = "A key that exists only in this test."
    extended = dataclasses.make_dataclass(
        "ExtendedConfig",
        [
            (
                "planted_key",
                int,
                dataclasses.field(default=7, metadata={"help": extra_help, "section": "lora"}),
            )
        ],
        bases=(TrainConfig,),
        frozen=True,
    )
    evaluate = dataclasses.make_dataclass(
        "ExtendedEvaluate",
        [("planted_measure", bool, dataclasses.field(default=False, metadata={"help": "Planted measure."}))],
        bases=(EvaluateSpec,),
        frozen=True,
    )
    page = study_file_page(extended, evaluate, **STUDY_OPTIONS)
    row = _row_of("planted_key", page)
    assert extra_help in row and "`--planted-key`" in row and "`7`" in row and "lora" in row
    assert "Planted measure." in _row_of("planted_measure", page)
    plain = study_file_page(TrainConfig, EvaluateSpec, **STUDY_OPTIONS)
    assert "planted_key" not in plain and "planted_measure" not in plain


def test_a_study_key_without_a_description_stops_the_generator() -> None:
    with pytest.raises(KeyError, match="new_key"):
        study_file_page(
            TrainConfig, EvaluateSpec, **{**STUDY_OPTIONS, "study_keys": (*STUDY_KEYS, "new_key")}
        )


def test_every_subcommand_has_a_page_listing_all_its_options(pages: dict[str, str]) -> None:
    assert set(COMMAND_OUTPUTS) == set(SUBCOMMANDS), "every command says which formats it writes"
    for name in SUBCOMMANDS:
        command = main.get_command(click.Context(main), name)
        assert command is not None
        page = pages[f"commands/{name}.md"]
        assert page.startswith(f"# deltarank {name}\n")
        assert f"[deltarank {name}]({name}.md)" in pages["commands/index.md"]
        for param in command.params:
            if isinstance(param, click.Option) and not param.hidden:
                assert f"| `{option_names(param)}` |" in page, f"{name}: {param.opts}"
                if param.help:
                    assert cell(param.help) in page, f"{name}: help of {param.opts}"
            elif isinstance(param, click.Argument):
                assert param.human_readable_name in page, f"{name}: argument {param.name}"


def test_a_command_page_shows_metavar_default_and_choices() -> None:
    @click.command()
    @click.argument("source")
    @click.option("--mode", type=click.Choice(["fast", "exact"]), default="exact", help="How to run.")
    @click.option("--size", type=click.IntRange(min=1), default=4, metavar="N", help="How many.")
    @click.option("--check/--no-check", default=True, help="Check first.")
    @click.option("--force", is_flag=True, help="Replace.")
    def planted(source: str, mode: str, size: int, check: bool, force: bool) -> None:
        """Do a planted thing."""

    page = command_page("planted", planted, ["- a planted output"])
    assert "Usage: deltarank planted [OPTIONS] SOURCE" in page and "Do a planted thing." in page
    assert "| `--mode` | `[fast\\|exact]` | `exact` | `fast`, `exact` | How to run. |" in page
    assert "| `--size` | `N` | `4` | `x>=1` | How many. |" in page
    assert "| `--check / --no-check` | — | `--check` | — | Check first. |" in page
    assert "| `--force` | — | — | — | Replace. |" in page
    assert page.rstrip().endswith("- a planted output")


def _schema_names() -> set[str]:
    """Every schema name declared in the package (the formats test's rule: `deltarank.<name>/<version>`)."""
    found = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                text = node.value
                if text.startswith("deltarank.") and text.count("/") == 1 and text.split("/")[1].isdigit():
                    found.add(text)
    return found


def test_every_format_and_schema_has_a_section(
    pages: dict[str, str], formats: dict[str, tuple[tuple[str, ...], str | None, bool]]
) -> None:
    page = pages["formats.md"]
    for name in formats:
        assert f"\n## {name}\n" in page, name
        assert f"](#{anchor(name)})" in page, name
    for schema, family in FAMILIES.items():
        assert f"\n### {schema}\n" in page, schema
        for item in dataclasses.fields(family):
            if item.metadata.get("json", True):
                assert f"| `{item.name}` |" in page, f"{schema}: {item.name}"
    missing = sorted(s for s in _schema_names() if f"`{s}`" not in page and f"### {s}" not in page)
    assert not missing, f"schemas without a section on the formats page: {missing}"


def test_each_command_lists_the_formats_it_writes(
    pages: dict[str, str], formats: dict[str, tuple[tuple[str, ...], str | None, bool]]
) -> None:
    for name, prefixes in COMMAND_OUTPUTS.items():
        for prefix in prefixes:
            target = format_name(prefix, formats)
            assert f"formats.md#{anchor(target)})" in pages[f"commands/{name}.md"], (name, prefix)
    spectrum = pages["commands/spectrum.md"]
    assert "| `singular_values` |" in spectrum and "#### MatrixSpectrum" in spectrum


def test_methods_page_lists_every_registry_entry(pages: dict[str, str]) -> None:
    from deltarank.io.training_methods import REGISTRY

    page = pages["methods.md"]
    for method in REGISTRY.values():
        row = _row_of(method.name, page)
        assert method.display in row and f"`{method.default_lr:g}`" in row and method.rank_bound in row
        assert f"\n### {method.name}\n" in page


def test_no_generated_page_is_committed(pages: dict[str, str]) -> None:
    """Generated at build time only: a copy in docs/ would shadow the generated page and drift."""
    committed = [path for path in pages if (REPO / "docs" / path).exists()]
    assert not committed, f"generated pages committed under docs/: {committed}"


@pytest.mark.skipif(
    importlib.util.find_spec("mkdocs") is None, reason="MkDocs not installed (the docs extra)"
)
def test_the_site_builds_strictly(tmp_path: Path) -> None:
    mkdocs = shutil.which("mkdocs", path=str(Path(sys.executable).parent)) or "mkdocs"
    done = subprocess.run(
        [
            mkdocs,
            "build",
            "--strict",
            "--quiet",
            "-f",
            str(REPO / "mkdocs.yml"),
            "-d",
            str(tmp_path / "site"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1", "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for page in ("commands/spectrum", "study-file", "methods", "formats", "api", "results", "architecture"):
        assert (tmp_path / "site" / page / "index.html").is_file(), page
