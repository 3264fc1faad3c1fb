"""PEFT LoRA adapter directories: `adapter_config.json` + `adapter_model.safetensors`.

Each adapted module becomes one `LoraModule`, named by the base weight it modifies
(`model.layers.0.self_attn.q_proj.weight`), with peft's exact scaling: s = α/r, or α/√r with rsLoRA, where
per-module `rank_pattern` / `alpha_pattern` override r and α (matched like peft's `get_pattern_key`).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from deltarank.errors import InputError
from deltarank.io.base import PICKLE_SUFFIXES, refuse_pickle
from deltarank.io.naming import canonical_name
from deltarank.io.safetensors_file import SafetensorsSource

CONFIG_FILE = "adapter_config.json"
# peft's LoraConfig default α, used when a config omits lora_alpha.
PEFT_DEFAULT_ALPHA = 8
WEIGHTS_FILE = "adapter_model.safetensors"
# Initialisations that rewrite the base weights (W_res = W − s·B₀A₀, or a quantized W for LoftQ): the adapter
# alone is not ΔW. (EVA, MiCA and "orthogonal" leave the base weights as they are, so s·B·A is ΔW.)
BASE_CHANGING_INITS = ("pissa", "olora", "corda", "loftq", "lora_ga")
_FACTOR = re.compile(r"^(?P<module>.+)\.lora_(?P<which>A|B)(?:\.[^.]+)?\.weight$")
_MAGNITUDE = re.compile(r"^(?P<module>.+)\.lora_magnitude_vector(?:\.[^.]+)?(?:\.weight)?$")


@dataclass(frozen=True)
class AdapterConfig:
    """The parts of a PEFT LoraConfig that decide ΔW."""

    r: int = field(metadata={"help": "Default rank."})
    lora_alpha: float = field(metadata={"help": "Default α."})
    use_rslora: bool = field(default=False, metadata={"help": "Scale by α/√r instead of α/r."})
    use_dora: bool = field(default=False, metadata={"help": "Weight-decomposed LoRA (magnitude vector)."})
    fan_in_fan_out: bool = field(default=False, metadata={"help": "Base weight stored (in, out)."})
    rank_pattern: dict[str, int] = field(default_factory=dict, metadata={"help": "Per-module r."})
    alpha_pattern: dict[str, float] = field(default_factory=dict, metadata={"help": "Per-module α."})

    def rank_and_alpha(self, module_key: str) -> tuple[int, float]:
        """r and α for one module key (e.g. `model.layers.0.self_attn.q_proj`), as peft resolves them."""
        r = self.rank_pattern.get(_pattern_key(self.rank_pattern, module_key), self.r)
        alpha = self.alpha_pattern.get(_pattern_key(self.alpha_pattern, module_key), self.lora_alpha)
        return int(r), float(alpha)

    def scaling(self, r: int, alpha: float) -> float:
        """peft's scale s: α/r, or α/√r with rsLoRA."""
        return alpha / math.sqrt(r) if self.use_rslora else alpha / r


def _pattern_key(patterns: dict[str, Any], key: str) -> str:
    """peft's `get_pattern_key`: the first pattern p with re.match(rf"(.*\\.)?({p})$", key)."""
    for pattern in patterns:
        if re.match(rf"(.*\.)?({pattern})$", key):
            return pattern
    return key


def parse_adapter_config(path: Path) -> AdapterConfig:
    """Read and check `adapter_config.json`.

    Raises:
        InputError: missing/invalid JSON, a PEFT type other than LORA, a base-changing initialisation.
    """
    config_path = path / CONFIG_FILE
    if not config_path.is_file():
        raise InputError(path, f"adapter directory has no {CONFIG_FILE}")
    try:
        raw = json.loads(config_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise InputError(config_path, f"invalid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise InputError(config_path, "expected a JSON object")
    peft_type = str(raw.get("peft_type", "")).upper()
    if peft_type != "LORA":
        raise InputError(config_path, f"unsupported PEFT type {peft_type or 'missing'!r} (LoRA/DoRA only)")
    init = str(raw.get("init_lora_weights", True)).lower()
    if init.startswith(BASE_CHANGING_INITS):
        raise InputError(
            config_path,
            f"init_lora_weights={init!r} rewrites the base weights, so the adapter alone is not ΔW; save it "
            "with peft's path_initial_model_for_weight_conversion to get a plain LoRA adapter",
        )
    return _config_from_dict(config_path, raw)


def _config_from_dict(config_path: Path, raw: dict[str, Any]) -> AdapterConfig:
    """Build the config, checking every field's type as peft writes it (integers, numbers, booleans, objects)."""
    r = _positive_int(config_path, "r", raw.get("r"))
    alpha = _finite(config_path, "lora_alpha", raw.get("lora_alpha", PEFT_DEFAULT_ALPHA))
    flags = {
        key: _flag(config_path, key, raw.get(key)) for key in ("use_rslora", "use_dora", "fan_in_fan_out")
    }
    rank_pattern = {
        key: _positive_int(config_path, f"rank_pattern[{key!r}]", value)
        for key, value in _mapping(config_path, "rank_pattern", raw.get("rank_pattern")).items()
    }
    alpha_pattern = {
        key: _finite(config_path, f"alpha_pattern[{key!r}]", value)
        for key, value in _mapping(config_path, "alpha_pattern", raw.get("alpha_pattern")).items()
    }
    for pattern in [*rank_pattern, *alpha_pattern]:
        try:
            re.compile(rf"(.*\.)?({pattern})$")  # the form `_pattern_key` matches with
        except (re.error, OverflowError, RecursionError):
            raise InputError(config_path, f"invalid rank/alpha pattern {pattern!r}") from None
    return AdapterConfig(
        r=r, lora_alpha=alpha, rank_pattern=rank_pattern, alpha_pattern=alpha_pattern, **flags
    )


def _positive_int(config_path: Path, key: str, value: Any) -> int:
    """A LoRA rank: a positive whole number (8 or 8.0)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if type(value) is not int or value <= 0:
        raise InputError(config_path, f"{key} must be a positive integer, got {value!r}")
    return value


def _finite(config_path: Path, key: str, value: Any) -> float:
    """A LoRA α: a finite number."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InputError(config_path, f"{key} must be a finite number, got {value!r}")
    return float(value)


def _flag(config_path: Path, key: str, value: Any) -> bool:
    """A boolean setting; absent or null means false."""
    if value is None:
        return False
    if not isinstance(value, bool):
        raise InputError(config_path, f"{key} must be true or false, got {value!r}")
    return value


def _mapping(config_path: Path, key: str, value: Any) -> dict[str, Any]:
    """rank_pattern / alpha_pattern: a JSON object (absent or null means empty)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InputError(config_path, f"{key} must be a JSON object, got {type(value).__name__}")
    return {str(k): v for k, v in value.items()}


@dataclass(frozen=True)
class LoraModule:
    """One adapted module, named by the base weight it modifies."""

    name: str  # base weight name, e.g. model.layers.0.self_attn.q_proj.weight
    a_key: str
    b_key: str
    magnitude_key: str | None
    rank: int
    alpha: float
    scale: float


class AdapterSource:
    """A PEFT LoRA adapter directory, read one module's factors at a time."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.config = parse_adapter_config(self.path)
        weights = self.path / WEIGHTS_FILE
        if not weights.is_file():
            pickles = [f for f in self.path.glob("adapter_model*") if f.suffix in PICKLE_SUFFIXES]
            if pickles:
                raise refuse_pickle(pickles[0])
            raise InputError(self.path, f"adapter directory has no {WEIGHTS_FILE}")
        self._file = SafetensorsSource(weights)
        self.weights_path = weights
        self.modules, self.unsupported = self._index()
        if not self.modules:
            raise InputError(weights, "holds no lora_A/lora_B factor pairs")

    def _index(self) -> tuple[dict[str, LoraModule], list[str]]:
        factors: dict[str, dict[str, str]] = {}
        unsupported = []
        for key in self._file.names():
            if m := _FACTOR.match(key):
                factors.setdefault(m["module"], {})[m["which"]] = key
            elif m := _MAGNITUDE.match(key):
                factors.setdefault(m["module"], {})["M"] = key
            else:
                unsupported.append(key)  # modules_to_save copies, embedding LoRA, ...
        modules = {}
        for prefix, keys in factors.items():
            if "A" not in keys or "B" not in keys:
                raise InputError(self._file.path, f"module {prefix!r} lacks its lora_A or lora_B factor")
            module_key = canonical_name(prefix)
            for key in (keys["A"], keys["B"]):
                if len(shape := self._file.info(key).shape) != 2:
                    raise InputError(self._file.path, f"factor {key!r} is not a matrix (shape {shape})")
            rank = self._file.info(keys["A"]).shape[0]
            r_config, alpha = self.config.rank_and_alpha(module_key)
            if rank != r_config:
                raise InputError(
                    self._file.path, f"module {module_key!r} has rank {rank} but the config says r={r_config}"
                )
            name = f"{module_key}.weight"
            if name in modules:
                raise InputError(self._file.path, f"holds two sets of factors for module {module_key!r}")
            modules[name] = LoraModule(
                name, keys["A"], keys["B"], keys.get("M"), rank, alpha, self.config.scaling(rank, alpha)
            )
        return modules, unsupported

    def factor_shapes(self, name: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Shapes of B (out, r) and A (r, in) of one module."""
        module = self.modules[name]
        return self._file.info(module.b_key).shape, self._file.info(module.a_key).shape

    def magnitude_shape(self, name: str) -> tuple[int, ...] | None:
        """Shape of the DoRA magnitude vector of one module (None without DoRA)."""
        key = self.modules[name].magnitude_key
        return None if key is None else self._file.info(key).shape

    def factor_dtype(self, name: str) -> str:
        """Stored dtype of the factors of one module."""
        return self._file.info(self.modules[name].a_key).dtype

    def read_tensors(self, name: str) -> dict[str, torch.Tensor]:
        """The saved tensors of one module in their stored dtypes, named by role: `lora_B` (out, r),
        `lora_A` (r, in) and, for DoRA, `magnitude` (out,)."""
        module = self.modules[name]
        tensors = {"lora_B": self._file.read(module.b_key), "lora_A": self._file.read(module.a_key)}
        if module.magnitude_key:
            tensors["magnitude"] = self._file.read(module.magnitude_key)
        return tensors


def is_adapter_dir(path: str | Path) -> bool:
    """True for a directory holding an adapter_config.json."""
    p = Path(path)
    return p.is_dir() and (p / CONFIG_FILE).is_file()
