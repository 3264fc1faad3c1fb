"""The method registry (`deltarank.io.training_methods`) is the one place per-method facts live: the CLI's
choices and option groups, the option-applies checks, the default learning rates, the config file's sections,
the study's and the figures' method sets, the builders and the training guide's methods table all read it; the values
it gives are exactly those the code held before it (a pure restructuring)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import click
import pytest

from deltarank.io.training_methods import METHOD_NAMES, REGISTRY, display_name, where

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "deltarank"


def test_derived_values_are_those_the_code_held_before() -> None:
    """Every list the registry replaced, as it was written out before (order included: error texts use it)."""
    from deltarank.study.measure.run_measures import NO_DELTA_METHODS
    from deltarank.study.run.runner import LORA_METHODS as RUNNER_LORA
    from deltarank.train.config import DEFAULT_LR
    from deltarank.train.config_file import SECTIONS
    from deltarank.train.config_validation import (
        FIELD_METHODS,
        METHODS,
        PROMPT_METHODS,
        SECTION_METHODS,
        WEIGHT_METHODS,
    )

    weights = ("lora", "qlora", "ia3", "loha", "lokr", "adalora", "oft", "boft", "vera")
    assert ("full", *weights, "prompt", "prefix", "ptuning", "adapter") == METHODS
    assert PROMPT_METHODS == ("prompt", "prefix", "ptuning")
    assert weights == WEIGHT_METHODS
    assert {
        "methods": weights,
        "lora": ("lora", "qlora"),
        "loha": ("loha",),
        "lokr": ("lokr",),
        "adalora": ("adalora",),
        "oft": ("oft",),
        "boft": ("boft",),
        "vera": ("vera",),
        "prompt": ("prompt", "prefix", "ptuning"),
        "adapter": ("adapter",),
    } == SECTION_METHODS
    assert FIELD_METHODS == {
        "prefix_projection": ("prefix",),
        "encoder_hidden_size": ("prefix", "ptuning"),
        "track_rank_sample": ("full",),
    }
    assert SECTIONS == ("lora", "loha", "lokr", "adalora", "oft", "boft", "vera", "prefix", "adapter")
    assert DEFAULT_LR == {
        "full": 2e-5,
        "lora": 2e-4,
        "qlora": 2e-4,
        "ia3": 3e-3,
        "loha": 2e-4,
        "lokr": 2e-4,
        "adalora": 5e-4,
        "oft": 2e-4,
        "boft": 2e-4,
        "vera": 4e-3,
        "prompt": 3e-2,
        "prefix": 1e-2,
        "ptuning": 1e-3,
        "adapter": 3e-4,
    }
    assert NO_DELTA_METHODS == ("prompt", "prefix", "ptuning", "adapter")
    assert RUNNER_LORA == ("lora", "qlora")


def test_resolved_targets_come_from_the_registry() -> None:
    """ia3 keeps peft's per-model default (None); every other method gets all-linear, as before."""
    from deltarank.train.config import TrainConfig

    for name in METHOD_NAMES:
        config = TrainConfig(model="m", data="d", method=name, output_dir="o").resolved()
        assert config.target_modules == (None if name == "ia3" else "all-linear"), name
        assert config.lr == REGISTRY[name].default_lr
        assert config.batching == ("padded" if REGISTRY[name].family == "prompt" else "auto")


def test_cli_method_choices_and_option_groups_are_the_registry() -> None:
    from deltarank.cli.train import SECTION_TITLES, train

    method = next(p for p in train.params if p.name == "method")
    assert isinstance(method.type, click.Choice)
    assert tuple(method.type.choices) == METHOD_NAMES
    sections = {getattr(p, "section", "") for p in train.params} - {""}
    assert sections <= set(SECTION_TITLES)
    assert SECTION_TITLES["lora"] == "lora / qlora"
    assert SECTION_TITLES["adapter"] == "adapter (bottleneck adapter)"


def test_method_help_names_every_method() -> None:
    import dataclasses

    from deltarank.train.config import TrainConfig

    help_text = next(f for f in dataclasses.fields(TrainConfig) if f.name == "method").metadata["help"]
    assert set(re.findall(r"[a-z0-9]+", help_text)) >= set(METHOD_NAMES)


def test_every_method_has_exactly_one_builder() -> None:
    from deltarank.train.methods import BUILDERS, builds

    assert sorted(BUILDERS) == sorted(METHOD_NAMES)
    with pytest.raises(AssertionError, match="lora has a builder already"):
        builds(BUILDERS["lora"])

    def dora(model: object, config: object) -> object:  # not a method of the registry
        return model

    with pytest.raises(AssertionError, match="dora is not a method"):
        builds(dora)


def test_delta_facts_agree_with_the_adapter_reader_and_the_delta_forms() -> None:
    """The ΔW kind a method's runs are read as is a delta form of the analysis, and the peft type's stored
    kind (qlora: LoRA's files read with the quantization of its base)."""
    from deltarank.analysis.maths.deltas import FORMS
    from deltarank.io.peft_methods import METHODS as PEFT_TYPES
    from deltarank.io.peft_methods import PROMPT_TYPES

    for entry in REGISTRY.values():
        assert entry.has_delta == (entry.family in ("full", "weights")), entry.name
        if entry.delta_kind is not None:
            assert entry.delta_kind in FORMS, entry.name
        if entry.family == "weights":
            assert entry.peft_type in PEFT_TYPES, entry.name
            stored = PEFT_TYPES[entry.peft_type].kind
            assert stored == ("lora" if entry.quantized_base else entry.delta_kind), entry.name
        elif entry.family == "prompt":
            assert entry.peft_type in PROMPT_TYPES, entry.name
        else:
            assert entry.peft_type is None, entry.name
    assert where("quantized_base") == ("qlora",)
    assert where("lora_like") == ("lora", "qlora")


def test_quantization_of_an_old_run_is_read_from_the_registry(tmp_path: Path) -> None:
    """A run.json without quantization.json is NF4 exactly when its method trains on a quantized base."""
    import json

    from deltarank.io.quantization import QLORA_NF4, read_quantization

    for name in METHOD_NAMES:
        run = tmp_path / name
        run.mkdir()
        (run / "run.json").write_text(json.dumps({"method": name}))
        assert read_quantization(run) == (QLORA_NF4 if REGISTRY[name].quantized_base else None), name


def test_figure_labels_come_from_the_registry() -> None:
    from deltarank.figures.learning import RUN_STYLE
    from deltarank.figures.study_rows import LORA_METHODS, is_lora

    assert {run: style[0] for run, style in RUN_STYLE.items()} == {r: REGISTRY[r].display for r in RUN_STYLE}
    assert where("lora_like") == LORA_METHODS
    assert is_lora({"settings": {"method": "qlora"}}) and not is_lora({"settings": {"method": "loha"}})
    assert display_name("adapter") == "bottleneck adapter" and display_name("my-run") == "my-run"


def _docs_methods_table() -> list[list[str]]:
    """The methods table of the training guide (docs/training.md; it was the README's)."""
    lines = (ROOT / "docs" / "training.md").read_text(encoding="utf-8").splitlines()
    start = lines.index("| `--method` | trains | its options [defaults] | default `--lr` |")
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def test_docs_methods_table_is_the_registry() -> None:
    """Its methods (in order), their own options and their default learning rates are the registry's."""
    import dataclasses

    from deltarank.cli.train import _flag
    from deltarank.train.config import TrainConfig
    from deltarank.train.config_validation import options_of_method

    rows = _docs_methods_table()
    assert tuple(re.fullmatch(r"`(\w+)`", row[0]).group(1) for row in rows) == METHOD_NAMES  # type: ignore[union-attr]
    config = TrainConfig(model="m", data="d", method="full", output_dir="o")
    by_name = {re.fullmatch(r"`(\w+)`", row[0]).group(1): row for row in rows}  # type: ignore[union-attr]
    for name, (_, _, options, lr) in by_name.items():
        assert float(lr.split()[0]) == REGISTRY[name].default_lr, name
        shown = set(re.findall(r"`(--[a-z-]+)`", options))
        if options.startswith("as `"):
            shown = set(re.findall(r"`(--[a-z-]+)`", by_name[options[4:-1]][2]))
        assert shown == {_flag(key) for key in options_of_method(config, name)}, name
    assert {f.name for f in dataclasses.fields(TrainConfig)} >= {"lora_r", "vera_r"}


# Literals of method names that are not lists of methods: reproduce's two runs are named after the methods
# they train (`full`, `lora`), and so are the runs of its summary.json that the learning figure styles; the
# adapter reader's rules are keyed by the stored delta kind of a peft type (`deltarank.io.peft_methods`), whose
# names some methods share.
RUN_NAME_LITERALS = {
    "deltarank/io/adapter.py",
    "deltarank/study/design/reproduction.py",
    "deltarank/study/report/summary.py",
    "deltarank/figures/learning.py",
}


def _method_literals(tree: ast.AST) -> list[int]:
    """Lines of tuple/list/set literals of two or more method names, and dict literals keyed by them."""
    found = []
    for node in ast.walk(tree):
        items: list[ast.expr | None] = []
        if isinstance(node, ast.Tuple | ast.List | ast.Set):
            items = list(node.elts)
        elif isinstance(node, ast.Dict):
            items = list(node.keys)
        else:
            continue
        strings = [i.value for i in items if isinstance(i, ast.Constant) and isinstance(i.value, str)]
        if len(strings) >= 2 and len(strings) == len(items) and set(strings) <= set(METHOD_NAMES):
            found.append(node.lineno)
    return found


def test_the_registry_is_the_only_list_of_methods() -> None:
    """No module but the registry writes out a list of methods (a second copy is how ten files came to
    disagree); the check itself finds such a list."""
    assert _method_literals(ast.parse('LORA = ("lora", "qlora")\nLR = {"full": 1, "ia3": 2}')) == [1, 2]
    offenders = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(ROOT).as_posix()
        if relative in RUN_NAME_LITERALS or relative == "deltarank/io/training_methods.py":
            continue
        lines = _method_literals(ast.parse(path.read_text(encoding="utf-8")))
        if lines:
            offenders[relative] = lines
    assert offenders == {}


def test_docs_spectrum_table_has_each_methods_delta_kind_and_rank_bound() -> None:
    """The spectrum guide's table of ΔW kinds (docs/spectrum.md; it was the README's) names every method's delta
    kind, with the registry's rank bound."""
    lines = (ROOT / "docs" / "spectrum.md").read_text(encoding="utf-8").splitlines()
    start = lines.index("| method (`kind`) | ΔW from the saved tensors | how σ are computed | `rank_bound` |")
    bounds = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        kind = re.search(r"\(`(\w+)`", cells[0])
        assert kind is not None, line
        bounds[kind.group(1)] = cells[-1].split(";")[0].strip()
    for entry in REGISTRY.values():
        if entry.family == "weights":
            assert bounds[str(entry.delta_kind)] == entry.rank_bound, entry.name


def test_rank_tracking_refusals_read_the_registry() -> None:
    """--track-rank needs a ΔW (refused for the virtual-token methods and bottleneck adapters, in the same words
    as before the registry); --track-rank-sample is full fine-tuning's own option."""
    from deltarank.errors import DeltarankError
    from deltarank.train.config import TrainConfig

    def build(method: str, **values: int) -> TrainConfig:
        return TrainConfig(model="m", data="d", method=method, output_dir="o", **values)  # type: ignore[arg-type]

    for name in where("has_delta"):
        build(name, track_rank=5)
    with pytest.raises(DeltarankError, match="method prefix learns virtual tokens and changes no weight"):
        build("prefix", track_rank=5)
    with pytest.raises(
        DeltarankError, match=r"^--track-rank: bottleneck adapters add new layers and change no"
    ):
        build("adapter", track_rank=5)
    build("full", track_rank=5, track_rank_sample=3)
    with pytest.raises(DeltarankError, match="--track-rank-sample is for full fine-tuning"):
        build("lora", track_rank=5, track_rank_sample=3)
