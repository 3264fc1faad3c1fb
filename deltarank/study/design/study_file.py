"""Reading a study file: which training runs a study is made of, and how each is evaluated; and the presets.

```yaml
name: lora-vs-full                 # optional
description: ...                   # optional
base: {model: smollm2-135m, data: builtin:code, max_steps: 60, batch_size: 4, seq_len: 128}
grid:                              # runs = the product of the lists
  method: [full, lora]             # any TrainConfig key ...
  data_size: [32, 128]             # ... or data_size: the number of training examples (TrainConfig max_examples)
  # a value may be a mapping of several keys set together: - {method: lora, lr: 5e-4}
runs:                              # optional: extra runs given explicitly
  - {name: lora-on-full, from: full-n128, data: builtin:zh-text, method: lora}
evaluate: {held_out_sequences: 32} # deltarank.study.design.evaluate_spec.EvaluateSpec
```

`base:` and every run's keys are checked as `deltarank train --config` files are (`train.config_file.config_values`:
unknown keys name the closest valid one, method sections such as `oft: {block_size: 16}` are allowed). How the
runs are made from `base:`, `grid:` and `runs:`, and named, is `deltarank.study.design.grid`.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.resources
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from deltarank.errors import InputError
from deltarank.study.design.evaluate_spec import EvaluateSpec
from deltarank.study.design.grid import grid_axes, study_runs, train_values
from deltarank.study.design.recommend_spec import written
from deltarank.study.design.study import RunSpec, Study

STUDY_KEYS = ("name", "description", "base", "grid", "runs", "evaluate", "reproduce")
SIZES = ("cpu", "full")


def load_study(path: str | Path) -> Study:
    """Read and check a study file (YAML).

    Raises:
        InputError: unreadable file, an unknown key (naming the closest valid one), a bad value, an empty study,
            duplicate run names, a `from:` that names no full fine-tuning run.
    """
    file = Path(path)
    if not file.is_file():
        raise InputError(file, "study file not found")
    try:
        raw = read_study_yaml(file.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise InputError(file, f"cannot parse the study file: {' '.join(str(exc).split())}") from None
    except AliasError as exc:
        raise InputError(file, str(exc)) from None
    return parse_study(raw, file)


class AliasError(ValueError):
    """A YAML anchor or alias in a study file (the message names its line)."""


class StudyLoader(yaml.SafeLoader):
    """PyYAML's safe loader without anchors and aliases (`&name`, `*name`, `<<: *name`): a few lines of aliases
    expand to billions of nodes (an "alias bomb"), and a study file has no need of them."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            kind = "alias" if isinstance(event, yaml.AliasEvent) else "anchor"
            raise AliasError(
                f"line {event.start_mark.line + 1}: YAML {kind} {'*' if kind == 'alias' else '&'}{event.anchor} "
                "is not allowed in a study file; write the values out"
            )
        return super().compose_node(parent, index)


class StudyDumper(yaml.SafeDumper):
    """PyYAML's safe dumper that never writes anchors and aliases (a shared value is written out each time), so
    that what it writes reads back with `StudyLoader`."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def read_study_yaml(text: str) -> Any:
    """The YAML of a study file, refusing anchors and aliases.

    Raises:
        yaml.YAMLError: not YAML.
        AliasError: an anchor or alias (naming its line).
    """
    return yaml.load(text, Loader=StudyLoader)  # StudyLoader is a SafeLoader


def dump_study_yaml(value: Any) -> str:
    """`value` as YAML without anchors or aliases (readable by `read_study_yaml`)."""
    return str(yaml.dump(value, Dumper=StudyDumper, sort_keys=False, allow_unicode=True))


def preset_path(name: str, size: str) -> Path:
    """The study file of a preset (`quick`, `biderman`, `belle`, `sweep`, `replay`, `recommend`) at a size (`cpu`
    or `full`).

    Raises:
        InputError: an unknown preset or size (naming the closest one).
    """
    names = preset_names()
    if name not in names:
        raise InputError(f"--preset {name}", _unknown(name, names, "preset"))
    if size not in SIZES:
        raise InputError(f"--size {size}", _unknown(size, list(SIZES), "size"))
    return _preset_folder() / f"{name}-{size}.yaml"


def preset_names() -> list[str]:
    """The presets shipped with deltarank."""
    return sorted({p.stem.rsplit("-", 1)[0] for p in _preset_folder().glob("*.yaml")})


def _preset_folder() -> Path:
    return Path(str(importlib.resources.files("deltarank.study") / "presets"))


def parse_study(raw: Any, source: str | Path) -> Study:
    """A study from the mapping of a study file (`source` names it in errors); see `load_study`."""
    if not isinstance(raw, Mapping):
        raise InputError(source, "a study file holds a mapping with base:, grid:, runs:, evaluate:")
    _check_keys(raw, STUDY_KEYS, source, "")
    base = train_values(raw.get("base") or {}, source, "base")
    grid = grid_axes(raw.get("grid") or {}, source)
    evaluate = EvaluateSpec.from_mapping(raw.get("evaluate"))
    runs = study_runs(base, grid, raw.get("runs") or [], source)
    resolved: dict[str, Any] = {
        "name": str(raw.get("name") or Path(str(source)).stem),
        "description": str(raw.get("description") or ""),
        "base": base,
        "grid": {k: [_plain(v) for v in values] for k, values in grid.items()},
        "runs": [_plain(_explicit_entry(r)) for r in runs if r.explicit],
        "evaluate": _plain(dataclasses.asdict(evaluate)),
    }
    names = {r.name for r in runs}
    for pair in evaluate.similarity:
        missing = [name for name in pair if name not in names]
        if missing:
            raise InputError(
                source, f"evaluate: similarity names {missing[0]!r}, which is not a run of the study"
            )
    if isinstance(evaluate.functional_rank, tuple):
        missing = [name for name in evaluate.functional_rank if name not in names]
        if missing:
            raise InputError(
                source, f"evaluate: functional_rank names {missing[0]!r}, which is not a run of the study"
            )
    if raw.get("reproduce") is not None:
        from deltarank.study.design.reproduction import check_reproduction

        resolved["reproduce"] = str(raw["reproduce"])
        check_reproduction({r.name: r.train_config(Path(r.name)) for r in runs}, resolved["reproduce"])
    return Study(resolved["name"], resolved["description"], tuple(runs), evaluate, resolved)


def _explicit_entry(run: RunSpec) -> dict[str, Any]:
    """A `runs:` entry as the resolved study file holds it (`recommend:` only where the run has one, so the
    fingerprints of studies without it stay as they were)."""
    entry = {"name": run.name, "from": run.parent, **run.coordinates}
    if run.recommend is not None:
        entry["recommend"] = written(run.recommend)
    return entry


def _check_keys(mapping: Mapping[str, Any], valid: tuple[str, ...], source: str | Path, where: str) -> None:
    for key in mapping:
        if key not in valid:
            raise InputError(source, f"{where}{_unknown(str(key), list(valid), 'key')}")


def _unknown(name: str, valid: list[str], what: str) -> str:
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f"did you mean '{close[0]}'?" if close else f"valid: {', '.join(valid)}"
    return f"unknown {what} '{name}'; {hint}"


def _plain(value: Any) -> Any:
    """A YAML value as plain JSON-able data (tuples to lists, keys to text)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
