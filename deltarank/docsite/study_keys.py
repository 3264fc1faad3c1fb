"""The study file reference page: every key of `base:`, `grid:`, `runs:`, `recommend:` and `evaluate:`.

The keys are read from the classes passed in (the train config and the `evaluate:` spec, both frozen
dataclasses) and from the study file's key lists; the prose around them from the modules' docstrings. A key
without a description here stops the generator, so a new top-level, run or recommend key cannot go unlisted.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Any

from deltarank.docsite.markdown import (
    NO_VALUE,
    code,
    field_default,
    field_help,
    field_type,
    prose,
    table,
)

# The top-level keys of a study file (deltarank.study.design.study_file.STUDY_KEYS).
STUDY_KEY_HELP = {
    "name": "The study's name (default: the file name without its suffix).",
    "description": "Free text, kept in study.json.",
    "base": "Train config keys shared by every run (below).",
    "grid": "Axes: a train config key (or `data_size`) mapped to a list of values; the runs are the product.",
    "runs": "Extra runs given explicitly (below).",
    "evaluate": "What every run is measured on (below).",
    "reproduce": "`quick` or `long`: the study is a reproduction (it has runs `full` and `lora` that train alike) "
    "and writes summary.json.",
}
# The keys of a `runs:` entry besides its train config keys (deltarank.study.design.grid.RUN_KEYS).
RUN_KEY_HELP = {
    "name": "Required. The run's name (its directory).",
    "from": "A full fine-tuning run this one trains on top of: its full name, or a grid run's readable name "
    "without the hash.",
    "recommend": "A LoRA run whose ranks `deltarank recommend` reads off another run's ΔW (below).",
}
# The keys of `recommend:` (deltarank.study.design.recommend_spec.SPEC_KEYS).
RECOMMEND_KEY_HELP = {
    "from": "Required. The run whose ΔW is measured (any earlier run that changes weights).",
    "energy": "Policy: each matrix's energy rank r_τ at τ.",
    "budget": "Policy: N trainable parameters, spent greedily on the ranks adding the most σ_k² per parameter.",
    "budget_rank": "Policy: the budget of uniform LoRA r = R on the same matrices.",
    "null": "A spectrum file of a null ΔW: no rank keeps a σ at or below its σ₁.",
}


def option_flags(item: dataclasses.Field[Any]) -> str:
    """The command-line spellings of a train config key (metadata "flags", else `--<key with dashes>`)."""
    flags = item.metadata.get("flags") or (f"--{item.name.replace('_', '-')}",)
    return ", ".join(flags)


def train_config_table(train_config: type) -> str:
    """One row per field of the train config: key, flags, type, default, section and help."""
    rows = [
        (
            code(f.name),
            code(option_flags(f)),
            code(field_type(f)),
            code(field_default(f)),
            f.metadata.get("section", "general"),
            field_help(train_config, f),
        )
        for f in dataclasses.fields(train_config)
    ]
    return table(("key", "flag", "type", "default", "section", "help"), rows)


def evaluate_table(evaluate_spec: type) -> str:
    """One row per field of the `evaluate:` spec: key, type, default and help."""
    rows = [
        (code(f.name), code(field_type(f)), code(field_default(f)), field_help(evaluate_spec, f))
        for f in dataclasses.fields(evaluate_spec)
    ]
    return table(("key", "type", "default", "help"), rows)


def keys_table(keys: Sequence[str], help_of: Mapping[str, str], where: str) -> str:
    """A key/help table of `keys`, each described in `help_of`.

    Raises:
        KeyError: a key without a description (the generator must be told about a new key).
    """
    missing = [key for key in keys if key not in help_of]
    if missing:
        raise KeyError(
            f"{where}: no description of key(s) {', '.join(missing)} in deltarank.docsite.study_keys"
        )
    return table(("key", "meaning"), ((code(key), help_of[key]) for key in keys))


def study_file_page(
    train_config: type,
    evaluate_spec: type,
    *,
    study_keys: Sequence[str],
    run_keys: Sequence[str],
    recommend_keys: Sequence[str],
    config_sections: Sequence[str],
    data_size: str,
    modules: Sequence[ModuleType] = (),
) -> str:
    """The study file reference page.

    Args:
        train_config: The dataclass of a run's settings (`TrainConfig`): the keys of `base:`, `grid:` and `runs:`.
        evaluate_spec: The dataclass of the `evaluate:` section (`EvaluateSpec`).
        study_keys: The top-level keys.
        run_keys: The keys of a `runs:` entry besides the train config keys.
        recommend_keys: The keys of a `recommend:` mapping.
        config_sections: Method sections a config may use (`oft: {block_size: 16}`).
        data_size: The study's name of `max_examples`.
        modules: Modules whose docstrings explain the file (the study file reader, the grid, `recommend:`).
    """
    sections = ", ".join(code(f"{s}:") for s in config_sections) or NO_VALUE
    parts = [
        "# Study file reference",
        "A study file (YAML) is what `deltarank study STUDY.yaml` runs; `deltarank train --config FILE` reads "
        "the same train config keys. This page is generated from the code: the train config dataclass, the "
        "`evaluate:` dataclass and the study file's key lists.",
        *(f"**{code(module.__name__)}**: " + prose(module.__doc__) for module in modules),
        "## Top-level keys",
        keys_table(study_keys, STUDY_KEY_HELP, "study keys"),
        "## base: (the train config keys)",
        f"Every key of `{train_config.__name__}`; the same keys are `deltarank train`'s options (the flag "
        "column) and a `--config` file's keys. A method's keys may also be given as a section: "
        f"{sections} (`oft: {{block_size: 16}}` is `oft_block_size: 16`). Unknown keys are an error naming "
        "the closest valid one.",
        train_config_table(train_config),
        "## grid:",
        f"Each axis is a train config key (or `{data_size}`, the study's name for `max_examples`) mapped to a "
        "list of values; a value may be a mapping that sets several keys together "
        "(`- {method: lora, lr: 5.0e-4}`). The runs are the product of the axes.",
        "## runs:",
        "Each entry is a mapping of these keys plus any train config key (they override `base:`).",
        keys_table(run_keys, RUN_KEY_HELP, "run keys"),
        "### recommend:",
        keys_table(recommend_keys, RECOMMEND_KEY_HELP, "recommend keys"),
        "## evaluate:",
        f"The keys of `{evaluate_spec.__name__}`; `-` and `_` are the same in a key.",
        evaluate_table(evaluate_spec),
    ]
    return "\n\n".join(part for part in parts if part) + "\n"
