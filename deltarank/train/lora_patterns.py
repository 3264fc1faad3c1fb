"""LoRA's per-module ranks and alphas (peft's `rank_pattern` / `alpha_pattern`), and a peft `adapter_config.json`
read as a training config (`deltarank train --config DIR/adapter_config.json`, as `deltarank recommend` writes it).

A pattern maps a key k to an integer; peft gives a module the value of the first key with
`re.match(rf"(.*\\.)?({k})$", module_name)`, so a full module name (`model.layers.1.self_attn.q_proj`) selects that
module only (not layer 11's) and a leaf name (`q_proj`) every module that ends in it.

An adapter_config.json maps to the TrainConfig keys it shares (`ADAPTER_KEYS`, and init_lora_weights to
lora_init); keys that do not change what is
trained (`INERT_KEYS`) are ignored; every other key must hold peft's own default (what deltarank trains with),
else the file is refused, naming the key: deltarank would silently train something else.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from deltarank.analysis.results.recommendation import RESULT_FILE, RecommendationResult
from deltarank.errors import InputError
from deltarank.io.atomic import atomic_directory

ADAPTER_CONFIG = "adapter_config.json"  # what peft's LoraConfig.save_pretrained names it
PEFT_TYPE = "LORA"
# adapter_config.json key -> TrainConfig key.
ADAPTER_KEYS = {
    "r": "lora_r",
    "lora_alpha": "lora_alpha",
    "lora_dropout": "lora_dropout",
    "use_rslora": "rslora",
    "use_dora": "dora",
    "target_modules": "target_modules",
    "rank_pattern": "lora_rank_pattern",
    "alpha_pattern": "lora_alpha_pattern",
}
# Keys that describe the file or its use, not the training: ignored.
INERT_KEYS = frozenset(
    {
        "peft_type",
        "base_model_name_or_path",
        "revision",
        "task_type",
        "inference_mode",
        "peft_version",
        "auto_mapping",
        "runtime_config",
    }
)
ALL_LINEAR = "all-linear"
INIT_KEY = "init_lora_weights"  # -> lora_init (true: default; a name: that initialisation)


def parse_pattern(value: Any, key: str) -> dict[str, int]:
    """A pattern from a config file (a mapping) or a flag (its JSON text): keys valid regexes, values positive
    integers.

    Raises:
        TypeError, ValueError: not a JSON object of integers, a value below 1 or a key that is no regex.
    """
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{key}: not JSON ({exc.msg})") from None
    if not isinstance(value, Mapping):
        raise TypeError(value)
    out: dict[str, int] = {}
    for name, number in value.items():
        if isinstance(number, bool) or not isinstance(number, int | float) or int(number) != number:
            raise TypeError(number)
        if number < 1:
            raise ValueError(number)
        try:
            re.compile(rf"(.*\.)?({name})$")  # how peft matches the key
        except re.error:
            raise ValueError(name) from None
        out[str(name)] = int(number)
    return out


def adapter_config_values(data: Mapping[str, Any], source: str | Path) -> dict[str, Any]:
    """The TrainConfig keys of a peft LoRA adapter_config.json (method lora, r, alpha, dropout, rsLoRA, DoRA,
    initialisation, target modules and the rank and alpha patterns).

    Raises:
        InputError: another peft_type, target_modules that are a regex or null, or a key that changes training
            away from peft's default that deltarank cannot reproduce (named).
    """
    from peft import LoraConfig

    peft_type = data.get("peft_type")
    if peft_type != PEFT_TYPE:
        raise InputError(
            source,
            f"peft_type {peft_type!r}: a peft adapter_config.json as --config must be of peft_type LORA",
        )
    defaults = _defaults(LoraConfig)
    values: dict[str, Any] = {"method": "lora"}
    for key, value in data.items():
        if key == INIT_KEY:
            values["lora_init"] = _init(value, source)
        elif key in ADAPTER_KEYS:
            values[ADAPTER_KEYS[key]] = value if value != {} else None  # peft writes {} for no pattern
        elif key not in INERT_KEYS and (key not in defaults or value != defaults[key]):
            shown = json.dumps(value) if _jsonable(value) else repr(value)
            raise InputError(
                source,
                f"{key} = {shown} changes training and deltarank train has no such setting (it trains with "
                f"peft's default{'' if key not in defaults else ' ' + json.dumps(defaults[key])}); remove the key",
            )
    if "target_modules" in values:
        values["target_modules"] = _targets(values["target_modules"], source)
    return values


def write_recommendation(result: RecommendationResult, out_dir: str | Path, overwrite: bool) -> list[Path]:
    """DIR/adapter_config.json (written by peft's own `LoraConfig.save_pretrained`, with deltarank train's default
    lora_dropout) and DIR/recommendation.json, all or nothing (a temporary directory renamed into place); an
    existing DIR is replaced only with `overwrite` (`deltarank recommend`, and a study's `recommend:` runs).

    Returns:
        The written paths, inside `out_dir`.
    """
    from peft import LoraConfig

    from deltarank.train.config import TrainConfig

    dropout = _defaults(TrainConfig)["lora_dropout"]  # as a run without the key trains
    config = LoraConfig(**result.lora_config_kwargs(), lora_dropout=dropout)
    with atomic_directory(out_dir, overwrite) as tmp:
        config.save_pretrained(str(tmp))
        result.to_json(tmp / RESULT_FILE)
    return [Path(out_dir) / name for name in (ADAPTER_CONFIG, RESULT_FILE)]


def _init(value: Any, source: str | Path) -> str:
    """peft's init_lora_weights as deltarank's lora_init: true -> default, a method name as it is (gaussian,
    pissa, olora, eva, corda, ...; TrainConfig checks it)."""
    if value is True:
        return "default"
    if isinstance(value, str):
        return value
    raise InputError(
        source,
        f"{INIT_KEY} = {json.dumps(value)}: deltarank trains from B = 0 or a named peft initialisation",
    )


def _targets(value: Any, source: str | Path) -> str:
    """peft's target_modules as deltarank's: a list of names -> `a,b,c` (sorted); `all-linear` stays."""
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return ",".join(sorted(value))  # peft keeps them as a set: saved in no fixed order
    if value == ALL_LINEAR:
        return ALL_LINEAR
    raise InputError(
        source, f"target_modules {value!r}: give a list of module names (or all-linear), not a regex or null"
    )


def _defaults(config_class: type) -> dict[str, Any]:
    """The default value of every field of a peft config dataclass, as save_pretrained writes it (JSON)."""
    found = {}
    for f in dataclasses.fields(config_class):
        if f.default is not dataclasses.MISSING:
            found[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            found[f.name] = f.default_factory()
    return {k: json.loads(json.dumps(v)) for k, v in found.items() if _jsonable(v)}


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True
