"""Every generated page of the documentation site, as Markdown text keyed by its path under the docs folder.

`generated_pages` takes what it documents as arguments (the commands, the format list, the classes), so a test
can pass a changed class and see the change on the page; `default_pages` passes deltarank's own.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Mapping
from typing import Any

import click

from deltarank.docsite.commands import command_page
from deltarank.docsite.formats import FormatSpec, format_link, formats_page, record_tables
from deltarank.docsite.markdown import code, summary, table
from deltarank.docsite.methods import methods_page
from deltarank.docsite.study_keys import study_file_page

# Where the format list is kept: the formats test, which checks it against every writer in the package.
# The formats each command writes: the start of each format's name in the format list (a name that matches
# none, or several, stops the generator). A study writes its runs' training files too.
_TRAIN_FILES = (
    "run.json",
    "train_config.yaml",
    "train_log.jsonl",
    "quantization.json",
    "bottleneck_config.json",
)
_STUDY_FILES = (
    *_TRAIN_FILES,
    "self_samples.jsonl",
    "study.yaml",
    "held-out split",
    "measurement.json",
    "general_text.jsonl",
    "generations.jsonl",
    "subspace.json",
    "analysis result",
    "recommend output directory",
    "placement output directory",
    "mitigated checkpoint",
    "study.json",
    "report.md",
    "summary.json",
)
COMMAND_OUTPUTS: dict[str, tuple[str, ...]] = {
    "spectrum": ("analysis result", "spectrum table", "spectrum resume cache"),
    "train": (*_TRAIN_FILES, "self_samples.jsonl"),
    "plot": (),
    "compare": ("compare table",),
    "reproduce": _STUDY_FILES,
    "intruders": ("analysis result", "mitigated checkpoint"),
    "placement": ("placement output directory",),
    "recommend": ("recommend output directory",),
    "similarity": ("analysis result",),
    "extract": ("extracted adapter", "adapter weights spill", "analysis result"),
    "evaluate": ("evaluate result", "generations.jsonl"),
    "study": _STUDY_FILES,
}
# The result family each analysis command writes ("module:class"), whose fields its page lists.
COMMAND_RESULTS: dict[str, str] = {
    "spectrum": "deltarank.analysis.results.spectrum:SpectrumResult",
    "intruders": "deltarank.analysis.results.intruders:IntruderResult",
    "similarity": "deltarank.analysis.results.similarity:SimilarityResult",
    "extract": "deltarank.analysis.results.extract:ExtractResult",
    "placement": "deltarank.analysis.results.placement:PlacementResult",
    "recommend": "deltarank.analysis.results.recommendation:RecommendationResult",
}


def format_name(prefix: str, formats: Mapping[str, FormatSpec]) -> str:
    """The one format whose name starts with `prefix`.

    Raises:
        KeyError: no format, or several, start with it.
    """
    found = [name for name in formats if name.startswith(prefix)]
    if len(found) != 1:
        raise KeyError(f"{prefix!r} names {len(found)} formats of the list, not one")
    return found[0]


def output_sections(name: str, formats: Mapping[str, FormatSpec], families: Mapping[str, type]) -> list[str]:
    """The "Output files" sections of a command's page: links to its formats, and its result's fields."""
    names = [format_name(prefix, formats) for prefix in COMMAND_OUTPUTS[name]]
    if not names:
        return []
    parts = ["\n".join(f"- {format_link(n)}" for n in names)]
    result = COMMAND_RESULTS.get(name)
    if result is not None:
        module, attr = result.split(":")
        cls = getattr(importlib.import_module(module), attr)
        schema = next(s for s, family in families.items() if family is cls)
        parts += [f"### Result file: schema {code(schema)}", record_tables(cls, level=4)]
    return parts


def commands_index(commands: Mapping[str, click.Command]) -> str:
    """The list of commands, each with the first line of its help."""
    rows = (
        (f"[deltarank {name}]({name}.md)", summary(command.help or "")) for name, command in commands.items()
    )
    return "# Commands\n\n" + table(("command", "what it does"), rows) + "\n"


def generated_pages(
    commands: Mapping[str, click.Command],
    formats: Mapping[str, FormatSpec],
    families: Mapping[str, type],
    *,
    train_config: type,
    evaluate_spec: type,
    study_options: Mapping[str, Any],
    registry: Mapping[str, Any],
    forms: Mapping[str, Any],
) -> dict[str, str]:
    """Every generated page: path under the docs folder -> Markdown.

    Args:
        commands: Subcommand name -> click command.
        formats: The format list (`tests/test_file_formats.py`'s `FORMATS`).
        families: Schema name -> result class (`deltarank.analysis.results.read.FAMILIES`).
        train_config: The train config dataclass.
        evaluate_spec: The `evaluate:` dataclass.
        study_options: The other arguments of `study_keys.study_file_page` (key lists, sections, modules).
        registry: The method registry.
        forms: Delta kind -> the function forming that ΔW.
    """
    pages = {"commands/index.md": commands_index(commands)}
    for name, command in commands.items():
        pages[f"commands/{name}.md"] = command_page(name, command, output_sections(name, formats, families))
    pages["study-file.md"] = study_file_page(train_config, evaluate_spec, **study_options)
    pages["methods.md"] = methods_page(registry, forms, train_config)
    pages["formats.md"] = formats_page(formats, families)
    return pages


def default_pages(formats: Mapping[str, FormatSpec]) -> dict[str, str]:
    """The generated pages of deltarank itself (every subcommand, its classes and registries)."""
    from deltarank.analysis.maths.deltas import FORMS
    from deltarank.analysis.results.read import FAMILIES
    from deltarank.cli import SUBCOMMANDS, main
    from deltarank.io.training_methods import REGISTRY
    from deltarank.study.design import grid, recommend_spec, study_file
    from deltarank.study.design.evaluate_spec import EvaluateSpec
    from deltarank.study.design.study import DATA_SIZE
    from deltarank.train.config import TrainConfig
    from deltarank.train.config_file import SECTIONS

    group = click.Context(main, info_name="deltarank")
    commands = {name: main.get_command(group, name) for name in SUBCOMMANDS}
    study_options = {
        "study_keys": study_file.STUDY_KEYS,
        "run_keys": grid.RUN_KEYS,
        "recommend_keys": recommend_spec.SPEC_KEYS,
        "config_sections": SECTIONS,
        "data_size": DATA_SIZE,
        "modules": (study_file, grid, recommend_spec),
    }
    return generated_pages(
        {name: command for name, command in commands.items() if command is not None},
        formats,
        FAMILIES,
        train_config=TrainConfig,
        evaluate_spec=EvaluateSpec,
        study_options=study_options,
        registry=REGISTRY,
        forms=FORMS,
    )
