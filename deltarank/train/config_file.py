"""Reading a training run's config: a YAML/TOML config file and flag overrides into a `TrainConfig`.

Keys are the command-line flags with `_` for `-` (`max_steps` for `--max-steps`); a config file may use either
spelling. Unknown keys are errors that suggest the closest valid key; keys of older files (`RENAMED_KEYS`) are
read with a deprecation warning. A method's own settings may also be given as a section (`oft: {block_size: 16}`
is `oft_block_size: 16`). Values are converted strictly to the fields' types (YAML reads `2e-4` as a string).
A peft LoRA `adapter_config.json` is read as a config too (`deltarank.train.lora_patterns`: method lora, its
rank, alpha, target modules and per-module rank and alpha patterns).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import sys
import typing
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from deltarank.errors import DeltarankError, InputError
from deltarank.io.training_methods import REGISTRY
from deltarank.train.config import TrainConfig
from deltarank.train.lora_patterns import adapter_config_values, parse_pattern

REQUIRED = ("model", "data", "method", "output_dir")
# Keys of older config files still read, with a deprecation warning: old key -> current key.
RENAMED_KEYS = {"precision": "mixed_precision"}
# Methods whose keys a config file may give as a section (`oft: {block_size: 16}`).
BAD_SUFFIX = "config file must end in .yaml, .yml or .toml, or be a peft adapter_config.json"
SECTIONS = tuple(m.config_section for m in REGISTRY.values() if m.config_section is not None)


def load_train_config(
    config_file: str | Path | None = None, overrides: Mapping[str, Any] | None = None
) -> TrainConfig:
    """Build a config from a YAML/TOML file and flag overrides (flags win; `None` values are ignored).

    Raises:
        InputError: the file cannot be read, or holds an unknown key or a value of the wrong type.
        DeltarankError: a required key is missing or a value is out of range.
    """
    values: dict[str, Any] = {}
    if config_file is not None:
        values = load_config_file(config_file)
    given = {_canonical_key(k, None): v for k, v in (overrides or {}).items() if v is not None}
    if "max_steps" in given:
        values.pop("epochs", None)
    if "epochs" in given:
        values.pop("max_steps", None)
    values.update(given)
    missing = [k for k in REQUIRED if k not in values]
    if missing:
        flags = ", ".join("--" + k.replace("_", "-") for k in missing)
        raise DeltarankError(f"missing {flags} (give it as a flag or in the --config file)")
    return TrainConfig(**{k: _coerce(k, v, config_file) for k, v in values.items()})


def field_names() -> list[str]:
    """The valid config keys, in declaration order."""
    return [f.name for f in dataclasses.fields(TrainConfig)]


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML (.yaml/.yml) or TOML (.toml) config file, or a peft LoRA adapter_config.json (.json), into a
    dict with canonical keys.

    Raises:
        InputError: missing file, unknown suffix, a parse error, a non-mapping top level or an unknown key.
    """
    file = Path(path)
    if not file.is_file():
        raise InputError(file, "config file not found")
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(file, "config file is not UTF-8 text (expected YAML or TOML)") from None
    try:
        if file.suffix == ".toml":
            data = _parse_toml(text)
        elif file.suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text)
        elif file.suffix == ".json":
            data = json.loads(text)
        else:
            raise InputError(file, BAD_SUFFIX)
    except (yaml.YAMLError, ValueError) as exc:
        raise InputError(file, f"cannot parse config: {' '.join(str(exc).split())}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError(file, "config file must hold a mapping of keys to values")
    if file.suffix == ".json":
        if "peft_type" not in data:
            raise InputError(file, BAD_SUFFIX)
        return adapter_config_values(data, file)
    return config_values(data, file, coerce=False)


def config_values(data: Mapping[str, Any], source: str | Path | None, coerce: bool = True) -> dict[str, Any]:
    """A mapping of config keys (either spelling, method sections allowed) with canonical keys and, with
    `coerce`, values converted to the fields' types (what `deltarank study` files hold under `base:`).

    Raises:
        InputError: an unknown key (naming the closest valid one) or a value of the wrong type (`source` set).
        DeltarankError: the same without a `source`.
    """
    values = {_canonical_key(str(k), source): v for k, v in _flatten_sections(dict(data)).items()}
    return {k: _coerce(k, v, source) for k, v in values.items()} if coerce else values


def _flatten_sections(data: dict[str, Any]) -> dict[str, Any]:
    """`oft: {block_size: 16}` -> `oft_block_size: 16` (a method's section of a config file)."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and str(key).replace("-", "_") in SECTIONS:
            flat.update({f"{key}_{sub}": v for sub, v in value.items()})
        else:
            flat[key] = value
    return flat


def _parse_toml(text: str) -> dict[str, Any]:
    """Parse TOML with the standard library (Python 3.11+) or tomli."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10 only
        try:
            import tomli as tomllib
        except ModuleNotFoundError as exc:
            raise ValueError("reading TOML on Python 3.10 needs `pip install tomli`; or use YAML") from exc
    return tomllib.loads(text)


def _canonical_key(key: str, source: str | Path | None) -> str:
    """Map `max-steps` to `max_steps`; reject unknown keys with the closest valid one."""
    name = key.strip().replace("-", "_")
    valid = field_names()
    if name in valid:
        return name
    if name in RENAMED_KEYS:
        warnings.warn(
            f"config key '{key}' is deprecated; use '{RENAMED_KEYS[name]}' (flag --mixed-precision)",
            FutureWarning,
            stacklevel=3,
        )
        return RENAMED_KEYS[name]
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else f"; valid keys: {', '.join(valid)}"
    problem = f"unknown key '{key}'{hint}"
    if source is None:
        raise DeltarankError(problem)
    raise InputError(source, problem)


def _coerce(key: str, value: Any, source: str | Path | None) -> Any:
    """Convert a config value to the field's type (YAML reads `2e-4` as a string, for instance)."""
    hint = typing.get_type_hints(TrainConfig)[key]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    target = args[0] if args else hint
    if value is None and type(None) in typing.get_args(hint):
        return None
    try:
        if typing.get_origin(target) is dict:  # a LoRA pattern: a mapping, or its JSON text from a flag
            return parse_pattern(value, key)
        return _convert(value, target)
    except (TypeError, ValueError):
        kind = "a JSON object of positive integers" if typing.get_origin(target) is dict else target.__name__
        problem = f"key '{key}' must be {kind}, got {value!r}"
        raise (InputError(source, problem) if source else DeltarankError(problem)) from None


def _convert(value: Any, target: type) -> Any:
    """Strict conversions: no bool where a number is expected, no fractional int."""
    if target is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no"):
            return value.lower() in ("true", "yes")
        raise TypeError(value)
    if isinstance(value, bool):
        raise TypeError(value)
    if target is int:
        number = float(value) if isinstance(value, str) else value
        if not isinstance(number, (int, float)) or int(number) != number:
            raise ValueError(value)
        return int(number)
    if target is float:
        return float(value)
    if target is str:
        if not isinstance(value, (str, int, float)):
            raise TypeError(value)
        return str(value)
    raise TypeError(value)
