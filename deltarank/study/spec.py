"""A study file: which training runs a study is made of, and how each is evaluated.

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
evaluate: {held_out_sequences: 32} # deltarank.study.evaluate_spec.EvaluateSpec
```

`base:` and every run's keys are checked as `deltarank train --config` files are (`train.config.config_values`:
unknown keys name the closest valid one, method sections such as `oft: {block_size: 16}` are allowed). A grid
run is named after its coordinates plus a short hash of its resolved TrainConfig (`lora-r16-n32-1a2b3c`), so a
change to its coordinates or to `base:` makes it a new run. `from:` names a full fine-tuning run (its full name
or the readable part without the hash): the run then trains starting from that run's output.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import importlib.resources
import itertools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from deltarank.errors import InputError
from deltarank.study.evaluate_spec import EvaluateSpec
from deltarank.train.config import SECTIONS, TrainConfig, config_values

STUDY_KEYS = ("name", "description", "base", "grid", "runs", "evaluate", "reproduce")
RUN_KEYS = ("name", "from")
DATA_SIZE = "data_size"  # a study's name for TrainConfig.max_examples
SIZES = ("cpu", "full")
# Keys that say where and how a run is shown, not what it computes: left out of a run's identity (its hash).
NOT_IDENTITY = ("output_dir", "resume", "force", "device", "progress", "download", "report_to")
HASH_LENGTH = 6
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
}


@dataclass(frozen=True)
class RunSpec:
    """One run of a study.

    Attributes:
        name: Its directory name under the study directory.
        coordinates: Its grid keys and values (for an explicit run, the keys it sets), `data_size` by that name.
        config: Its TrainConfig values (canonical keys, `max_examples` for data_size), without output_dir.
        parent: The run it starts from (a stacked run), or None.
    """

    name: str
    coordinates: dict[str, Any]
    config: dict[str, Any]
    parent: str | None = None
    explicit: bool = False  # given under runs: (not a grid point)

    def train_config(self, run_dir: Path, model: str | None = None, **overrides: Any) -> TrainConfig:
        """The TrainConfig of this run, writing to `run_dir` (`model`: a stacked run's parent output)."""
        values = {**self.config, "output_dir": str(run_dir), **overrides}
        if model is not None:
            values["model"] = model
        return TrainConfig(**values)

    def identity(self) -> dict[str, Any]:
        """The resolved TrainConfig values that decide what this run computes (the basis of its hash)."""
        resolved = self.train_config(Path("run")).resolved().to_dict()
        for key in NOT_IDENTITY:
            resolved.pop(key, None)
        if self.parent is not None:
            resolved["model"] = f"run:{self.parent}"
        return resolved

    @property
    def data_size(self) -> int | None:
        value = self.config.get("max_examples")
        return int(value) if value is not None else None


@dataclass(frozen=True)
class Study:
    """A parsed study file: its runs (grid and explicit, parents before children) and what to evaluate."""

    name: str
    description: str
    runs: tuple[RunSpec, ...]
    evaluate: EvaluateSpec
    resolved: dict[str, Any]  # the study file with canonical keys (written to DIR/study.yaml)

    @property
    def fingerprint(self) -> str:
        """A hash of the resolved study: the same study file, however spelt, has the same one."""
        return short_hash(self.resolved, 12)

    def run(self, name: str) -> RunSpec:
        return next(r for r in self.runs if r.name == name)

    def levels(self) -> list[list[RunSpec]]:
        """The runs in waves: runs without a parent first, then their children, and so on."""
        depth: dict[str, int] = {}
        for run in self.runs:  # parents come first (checked when parsing)
            depth[run.name] = 0 if run.parent is None else depth[run.parent] + 1
        waves: list[list[RunSpec]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
        for run in self.runs:
            waves[depth[run.name]].append(run)
        return waves

    def root_model(self, run: RunSpec) -> str:
        """The base model a run descends from (a stacked run's root ancestor's model)."""
        while run.parent is not None:
            run = self.run(run.parent)
        return str(run.config["model"])


def short_hash(value: Any, length: int = HASH_LENGTH) -> str:
    """The first `length` hex digits of the SHA-256 of `value`'s canonical JSON."""
    text = json.dumps(value, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


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
        raw = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise InputError(file, f"cannot parse the study file: {' '.join(str(exc).split())}") from None
    return parse_study(raw, file)


def preset_path(name: str, size: str) -> Path:
    """The study file of a preset (`quick`, `biderman`, `belle`) at a size (`cpu` or `full`).

    Raises:
        InputError: an unknown preset or size (naming the closest one).
    """
    folder = Path(str(importlib.resources.files("deltarank.study") / "presets"))
    names = sorted({p.stem.rsplit("-", 1)[0] for p in folder.glob("*.yaml")})
    if name not in names:
        raise InputError(f"--preset {name}", _unknown(name, names, "preset"))
    if size not in SIZES:
        raise InputError(f"--size {size}", _unknown(size, list(SIZES), "size"))
    return folder / f"{name}-{size}.yaml"


def preset_names() -> list[str]:
    """The presets shipped with deltarank."""
    folder = Path(str(importlib.resources.files("deltarank.study") / "presets"))
    return sorted({p.stem.rsplit("-", 1)[0] for p in folder.glob("*.yaml")})


def parse_study(raw: Any, source: str | Path) -> Study:
    """A study from the mapping of a study file (`source` names it in errors); see `load_study`."""
    if not isinstance(raw, Mapping):
        raise InputError(source, "a study file holds a mapping with base:, grid:, runs:, evaluate:")
    _check_keys(raw, STUDY_KEYS, source, "")
    base = _train_values(raw.get("base") or {}, source, "base")
    grid = _grid(raw.get("grid") or {}, source)
    evaluate = EvaluateSpec.from_mapping(raw.get("evaluate"))
    runs = [_grid_run(base, point, source) for point in _grid_points(grid)] if grid else []
    explicit = raw.get("runs") or []
    if not isinstance(explicit, list):
        raise InputError(source, "runs: must be a list of runs, each a mapping with a name")
    if not runs and not explicit:
        if not base:
            raise InputError(source, "the study has no runs: give grid: or runs:")
        runs = [_grid_run(base, {}, source)]
    runs += _explicit_runs(base, explicit, runs, source)
    names = [r.name for r in runs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InputError(source, f"two runs share the name {duplicates[0]!r}; name them apart")
    resolved: dict[str, Any] = {
        "name": str(raw.get("name") or Path(str(source)).stem),
        "description": str(raw.get("description") or ""),
        "base": base,
        "grid": {k: [_plain(v) for v in values] for k, values in grid.items()},
        "runs": [_plain({"name": r.name, "from": r.parent, **r.coordinates}) for r in runs if r.explicit],
        "evaluate": _plain(dataclasses.asdict(evaluate)),
    }
    if raw.get("reproduce") is not None:
        from deltarank.study.reproduction import reproduce_config

        resolved["reproduce"] = str(raw["reproduce"])
        reproduce_config(
            {r.name: r.train_config(Path(r.name)) for r in runs}, resolved["reproduce"], Path(".")
        )
    return Study(resolved["name"], resolved["description"], tuple(runs), evaluate, resolved)


def _check_keys(mapping: Mapping[str, Any], valid: tuple[str, ...], source: str | Path, where: str) -> None:
    for key in mapping:
        if key not in valid:
            raise InputError(source, f"{where}{_unknown(str(key), list(valid), 'key')}")


def _unknown(name: str, valid: list[str], what: str) -> str:
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f"did you mean '{close[0]}'?" if close else f"valid: {', '.join(valid)}"
    return f"unknown {what} '{name}'; {hint}"


def _train_values(raw: Any, source: str | Path, where: str) -> dict[str, Any]:
    """TrainConfig values of a mapping, `data_size` read as max_examples."""
    if not isinstance(raw, Mapping):
        raise InputError(source, f"{where}: must be a mapping of train config keys to values")
    values = dict(raw)
    if DATA_SIZE in values:
        values["max_examples"] = values.pop(DATA_SIZE)
    try:
        return config_values(values, source)
    except InputError as exc:
        raise InputError(source, f"{where}: {exc.problem}") from None


def _grid(raw: Any, source: str | Path) -> dict[str, list[dict[str, Any]]]:
    """Each grid axis as its list of points, a point being the TrainConfig values it sets."""
    if not isinstance(raw, Mapping):
        raise InputError(source, "grid: must map a train config key (or data_size) to a list of values")
    axes: dict[str, list[dict[str, Any]]] = {}
    for key, values in raw.items():
        if not isinstance(values, list) or not values:
            raise InputError(source, f"grid: {key} must be a non-empty list of values")
        points = []
        for value in values:
            point = value if isinstance(value, Mapping) else {key: value}
            points.append(_coordinates(_train_values(point, source, f"grid: {key}")))
        axes[str(key)] = points
    return axes


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
        values = _train_values(settings, source, where)
        parent = _parent(entry.get("from"), known, source, where)
        run = RunSpec(name, _coordinates(values), {**base, **values}, parent.name if parent else None, True)
        if parent is not None and "model" in values:
            raise InputError(source, f"{where}: a run with from: trains from its parent; drop model:")
        if parent is not None:
            run = dataclasses.replace(run, config={**run.config, "model": parent.config["model"]})
        _check_config(run, source, where)
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
    from deltarank.errors import DeltarankError

    missing = [k for k in ("model", "data", "method") if k not in run.config]
    if missing:
        raise InputError(
            source, f"{where}: run {run.name}: no {', '.join(missing)} (give it in base: or the run)"
        )
    try:
        run.train_config(Path("run"))
    except DeltarankError as exc:
        raise InputError(source, f"{where}: run {run.name}: {exc}") from None


def _plain(value: Any) -> Any:
    """A YAML value as plain JSON-able data (tuples to lists, keys to text)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
