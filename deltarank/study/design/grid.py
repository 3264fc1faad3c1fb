"""From a study's `base:`, `grid:` and `runs:` sections to its runs (RunSpecs) and their names.

The grid's runs are the product of its lists, each value setting one key or, as a mapping, several together. A
grid run is named after its coordinates plus a short hash of its resolved TrainConfig (`lora-r16-n32-1a2b3c`),
so a change to its coordinates or to `base:` makes it a new run. A `runs:` entry is named by its `name:`; its
`from:` names a full fine-tuning run (its full name or the readable part without the hash): the run then trains
starting from that run's output; its `recommend:` makes a LoRA run with the ranks `deltarank recommend` finds in
another run's ΔW (`deltarank.study.design.recommend_spec`).
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from deltarank.errors import DeltarankError, InputError
from deltarank.study.design.recommend_spec import expand_seeds, recommend_spec
from deltarank.study.design.study import DATA_SIZE, RunSpec, short_hash
from deltarank.train.config import TrainConfig
from deltarank.train.config_file import SECTIONS, config_values

MAX_RUNS = 10_000  # runs a study may hold: the grid's size is checked against it before it is expanded
RUN_KEYS = ("name", "from", "recommend")  # the keys of a `runs:` entry besides its train config keys
# Short forms of coordinates in run names: key -> prefix of its value (None: the value alone).
NAME_PREFIX: dict[str, str | None] = {
    "model": None,
    "method": None,
    "data": None,
    DATA_SIZE: "n",
    "lora_r": "r",
    "lr": "lr",
    "seed": "s",
    "max_steps": "steps",
    "epochs": "ep",
    "weight_decay": "wd",
    "attention_dropout": "adrop",
    "lora_alpha": "a",
    "target_modules": "t",
    "replay_fraction": "replay",
}


def train_values(raw: Any, source: str | Path, where: str) -> dict[str, Any]:
    """TrainConfig values of a mapping, `data_size` read as max_examples.

    Args:
        raw: The mapping (`base:`, a grid value, a `runs:` entry without name and from).
        source: The study file, named in errors.
        where: The section, named in errors (`base`, `grid: method`, `runs[0]`).

    Raises:
        InputError: not a mapping, an unknown key (naming the closest valid one) or a bad value.
    """
    if not isinstance(raw, Mapping):
        raise InputError(source, f"{where}: must be a mapping of train config keys to values")
    values = dict(raw)
    if DATA_SIZE in values:
        values["max_examples"] = values.pop(DATA_SIZE)
    try:
        return config_values(values, source)
    except InputError as exc:
        raise InputError(source, f"{where}: {exc.problem}") from None


def grid_axes(raw: Any, source: str | Path) -> dict[str, list[dict[str, Any]]]:
    """Each axis of a `grid:` section as its list of points, a point being the coordinates it sets.

    Raises:
        InputError: not a mapping, an axis that is not a non-empty list, a bad key or value.
    """
    if not isinstance(raw, Mapping):
        raise InputError(source, "grid: must map a train config key (or data_size) to a list of values")
    axes: dict[str, list[dict[str, Any]]] = {}
    for key, values in raw.items():
        if not isinstance(values, list) or not values:
            raise InputError(source, f"grid: {key} must be a non-empty list of values")
        points = []
        for value in values:
            point = value if isinstance(value, Mapping) else {key: value}
            points.append(_coordinates(train_values(point, source, f"grid: {key}")))
        axes[str(key)] = points
    return axes


def study_runs(
    base: dict[str, Any], axes: dict[str, list[dict[str, Any]]], entries: Any, source: str | Path
) -> list[RunSpec]:
    """A study's runs: one per grid point (or `base:` alone), then its `runs:` entries, parents first.

    Args:
        base: The TrainConfig values of `base:` (see `train_values`).
        axes: The grid (see `grid_axes`).
        entries: The `runs:` section as read (a list of mappings).
        source: The study file, named in errors.

    Raises:
        InputError: a run without model, data or method, a bad value, `runs:` that is not a list, no runs at
            all, a bad `runs:` entry, a `from:` that names no full fine-tuning run, two runs with one name, more
            than MAX_RUNS runs (checked before the grid is expanded).
    """
    check_size(axes, entries, source)
    runs = [_grid_run(base, point, source) for point in _grid_points(axes)] if axes else []
    if not isinstance(entries, list):
        raise InputError(source, "runs: must be a list of runs, each a mapping with a name")
    if not runs and not entries:
        if not base:
            raise InputError(source, "the study has no runs: give grid: or runs:")
        runs = [_grid_run(base, {}, source)]
    runs += _explicit_runs(base, expand_seeds(entries, axes), runs, source)
    names = [r.name for r in runs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InputError(source, f"two runs share the name {duplicates[0]!r}; name them apart")
    return runs


def check_size(axes: Mapping[str, list[Any]], entries: Any, source: str | Path) -> None:
    """Refuse a study of more than MAX_RUNS runs before any run is made (a grid's size is the product of its
    axes' lengths: three axes of 1,000 values are 10⁹ runs, which would exhaust the memory being listed).

    Raises:
        InputError: naming the number of runs and the axes' lengths.
    """
    size = math.prod(len(values) for values in axes.values()) if axes else 0
    extra = len(entries) if isinstance(entries, list) else 0
    if size + extra > MAX_RUNS:
        shape = " × ".join(f"{len(v):,} {k}" for k, v in axes.items())
        grid = f"the grid makes {size:,} runs ({shape})" if axes else "no grid"
        more = f" and runs: lists {extra:,}" if extra else ""
        raise InputError(
            source, f"{grid}{more}; a study holds at most {MAX_RUNS:,} runs (split it into several studies)"
        )


def readable_name(coordinates: Mapping[str, Any]) -> str:
    """`{"method": "lora", "lora_r": 16, "data_size": 32}` -> `lora-r16-n32` (file-name safe)."""
    parts = []
    for key, value in coordinates.items():
        prefix = NAME_PREFIX.get(key, key.replace("_", ""))
        text = _value_text(value)
        parts.append(text if prefix is None else f"{prefix}{text}")
    return re.sub(r"[^A-Za-z0-9.+_-]+", "_", "-".join(parts)).strip("-_.")


def _value_text(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    text = str(value)
    if text.startswith("builtin:"):
        text = text.removeprefix("builtin:")
    return Path(text).name if "/" in text else text


def _coordinates(values: dict[str, Any]) -> dict[str, Any]:
    """TrainConfig values with max_examples named data_size again (a run's coordinates)."""
    return {(DATA_SIZE if k == "max_examples" else k): v for k, v in values.items()}


def _config_of(coordinates: Mapping[str, Any]) -> dict[str, Any]:
    return {("max_examples" if k == DATA_SIZE else k): v for k, v in coordinates.items()}


def _grid_points(grid: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The product of the axes, each point the union of its values' coordinates (later axes win)."""
    points = []
    for combination in itertools.product(*grid.values()):
        point: dict[str, Any] = {}
        for part in combination:
            point.update(part)
        points.append(point)
    return points


def _grid_run(base: dict[str, Any], coordinates: dict[str, Any], source: str | Path) -> RunSpec:
    config = {**base, **_config_of(coordinates)}
    draft = RunSpec(readable_name(coordinates) or "base", coordinates, config)
    _check_config(draft, source, "grid")
    name = "-".join(filter(None, [readable_name(coordinates), short_hash(draft.identity())]))
    return dataclasses.replace(draft, name=name)


def _explicit_runs(
    base: dict[str, Any], raw_runs: list[Any], grid_runs: list[RunSpec], source: str | Path
) -> list[RunSpec]:
    """The `runs:` entries, each checked; a `from:` must name an earlier full fine-tuning run."""
    valid = (*RUN_KEYS, DATA_SIZE, *SECTIONS, *TrainConfig.__dataclass_fields__)
    known = list(grid_runs)
    found = []
    for index, entry in enumerate(raw_runs):
        where = f"runs[{index}]"
        if not isinstance(entry, Mapping) or not entry.get("name"):
            raise InputError(source, f"{where}: each run is a mapping with a name")
        name = str(entry["name"])
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.+_-]*", name):
            raise InputError(source, f"{where}: name {name!r} must be a file name (letters, digits, . + _ -)")
        for key in entry:
            close = difflib.get_close_matches(str(key), RUN_KEYS, n=1)
            if str(key) not in valid and str(key).replace("-", "_") not in valid and close:
                raise InputError(source, f"{where}: unknown key '{key}'; did you mean '{close[0]}'?")
        settings = {k: v for k, v in entry.items() if k not in RUN_KEYS}
        values = train_values(settings, source, where)
        parent = _parent(entry.get("from"), known, source, where)
        run = RunSpec(name, _coordinates(values), {**base, **values}, parent.name if parent else None, True)
        if parent is not None and "model" in values:
            raise InputError(source, f"{where}: a run with from: trains from its parent; drop model:")
        if parent is not None:
            run = dataclasses.replace(run, config={**run.config, "model": parent.config["model"]})
        _check_config(run, source, where)
        if entry.get("recommend") is not None:
            spec = recommend_spec(entry["recommend"], run, known, source, where, readable_name)
            run = dataclasses.replace(run, recommend=spec)
        known.append(run)
        found.append(run)
    return found


def _parent(name: Any, known: list[RunSpec], source: str | Path, where: str) -> RunSpec | None:
    """The run `from:` names (full name, or the readable part of a grid run's name); a full FT run."""
    if name is None:
        return None
    wanted = str(name)
    matches = [r for r in known if r.name == wanted] or [
        r for r in known if r.name.rsplit("-", 1)[0] == wanted
    ]
    if len(matches) != 1:
        names = [r.name.rsplit("-", 1)[0] if not r.explicit else r.name for r in known]
        problem = (
            f"from: {wanted!r} names no earlier run" if not matches else f"from: {wanted!r} is ambiguous"
        )
        close = difflib.get_close_matches(wanted, names, n=1)
        raise InputError(source, f"{where}: {problem}" + (f"; did you mean '{close[0]}'?" if close else ""))
    parent = matches[0]
    if parent.config.get("method") != "full":
        raise InputError(
            source,
            f"{where}: from: {parent.name} is a {parent.config.get('method')} run; a stacked run starts from "
            "a full fine-tuning run's weights (method: full)",
        )
    return parent


def _check_config(run: RunSpec, source: str | Path, where: str) -> None:
    """Build the run's TrainConfig once, so a missing key or bad value is reported now, naming the run."""
    missing = [k for k in ("model", "data", "method") if k not in run.config]
    if missing:
        raise InputError(
            source, f"{where}: run {run.name}: no {', '.join(missing)} (give it in base: or the run)"
        )
    try:
        run.train_config(Path("run"))
    except DeltarankError as exc:
        raise InputError(source, f"{where}: run {run.name}: {exc}") from None
