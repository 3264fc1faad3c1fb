"""PEFT adapter directories of weight-modifying methods: `adapter_config.json` + `adapter_model.safetensors`.

Each adapted module becomes one `AdapterModule`, named by the base weight it modifies
(`model.layers.0.self_attn.q_proj.weight`), holding its method kind, its saved tensors by role and peft's exact
numbers: LoRA's s = α/r, or α/√r with rsLoRA, where per-module `rank_pattern` / `alpha_pattern` override r and
α (matched like peft's `get_pattern_key`, also for LoHa and LoKr); AdaLoRA's α/(init_r + 1e-5); OFT's Cayley
settings. Read types: LORA (with DoRA), ADALORA, IA3, LOHA, LOKR, OFT, BOFT, VERA (see `peft_methods`);
prompt-based types change no weight and are refused with one line saying so.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from deltarank.errors import InputError
from deltarank.io.base import PICKLE_SUFFIXES, TensorSource, refuse_pickle
from deltarank.io.memory import MemorySource
from deltarank.io.naming import canonical_name
from deltarank.io.peft_methods import METHODS, PROMPT_TYPES, ROLE_OF_PARAM
from deltarank.io.quantization import QuantizationSpec, read_quantization
from deltarank.io.safetensors_file import SafetensorsSource
from deltarank.io.standalone import VIRTUAL_TOKEN_TYPES

CONFIG_FILE = "adapter_config.json"
# peft's LoraConfig default α, used when a config omits lora_alpha.
PEFT_DEFAULT_ALPHA = 8
WEIGHTS_FILE = "adapter_model.safetensors"
# Initialisations that rewrite the base weights (W_res = W − s·B₀A₀, or a quantized W for LoftQ): the adapter
# alone is not ΔW; "milora" is the mark `deltarank train --lora-init milora` leaves on its raw factors. (EVA, MiCA
# and "orthogonal" leave the base weights as they are, so s·B·A is ΔW.)
BASE_CHANGING_INITS = ("pissa", "olora", "corda", "loftq", "lora_ga", "milora")
# peft's AdaLoRA divides by ranknum + 1e-5 (ranknum = init_r, not saved).
ADALORA_RANKNUM_EPS = 1e-5
# peft's OFTConfig defaults for the settings the delta form reads.
OFT_DEFAULTS = {"coft": 0.0, "eps": 6e-5, "block_share": 0.0, "use_cayley_neumann": 1.0}
OFT_DEFAULTS["num_cayley_neumann_terms"] = 5.0


@dataclass(frozen=True)
class AdapterConfig:
    """The parts of a PEFT config that decide ΔW."""

    r: int = field(metadata={"help": "Default rank (AdaLoRA: init_r; 0 for IA3, OFT, BOFT)."})
    lora_alpha: float = field(metadata={"help": "Default α."})
    use_rslora: bool = field(default=False, metadata={"help": "Scale by α/√r instead of α/r."})
    use_dora: bool = field(default=False, metadata={"help": "Weight-decomposed LoRA (magnitude vector)."})
    fan_in_fan_out: bool = field(default=False, metadata={"help": "Base weight stored (in, out)."})
    rank_pattern: dict[str, int] = field(default_factory=dict, metadata={"help": "Per-module r."})
    alpha_pattern: dict[str, float] = field(default_factory=dict, metadata={"help": "Per-module α."})
    peft_type: str = field(default="LORA", metadata={"help": "The peft type, upper case (a key of METHODS)."})
    options: dict[str, float] = field(
        default_factory=dict, metadata={"help": "Other settings a delta form reads (OFT's Cayley settings)."}
    )

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
        InputError: missing/invalid JSON, a PEFT type that is prompt-based or not read, a base-changing
            initialisation, settings this reader cannot reproduce.
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
    return adapter_config_from_dict(raw, config_path)


def adapter_config_from_dict(raw: dict[str, Any], config_path: Path) -> AdapterConfig:
    """Check the decoded `adapter_config.json` (or peft's `PeftConfig.to_dict()` of a live model, JSON-encoded);
    `config_path` names it in errors. Raises InputError as `parse_adapter_config`."""
    peft_type = str(raw.get("peft_type", "")).upper()
    if peft_type in PROMPT_TYPES:
        where = (
            f"`deltarank spectrum {config_path.parent}` (the adapter alone) reports its virtual-token matrix"
            if peft_type in VIRTUAL_TOKEN_TYPES
            else "its tensors are not read"
        )
        raise InputError(
            config_path,
            f"PEFT type {peft_type!r} changes no weight (it learns virtual-token embeddings or a gated prompt), "
            f"so there is no ΔW to measure; {where}",
        )
    if peft_type not in METHODS:
        raise InputError(
            config_path,
            f"unsupported PEFT type {peft_type or 'missing'!r} (weight-modifying types read: {', '.join(METHODS)})",
        )
    if peft_type == "LORA":
        init = str(raw.get("init_lora_weights", True)).lower()
        if init.startswith(BASE_CHANGING_INITS):
            raise InputError(
                config_path,
                f"init_lora_weights={init!r} rewrites the base weights, so the adapter alone is not ΔW; save it "
                "with peft's path_initial_model_for_weight_conversion to get a plain LoRA adapter",
            )
        return _config_from_dict(config_path, raw)
    return _other_config(config_path, peft_type, raw)


def _other_config(config_path: Path, peft_type: str, raw: dict[str, Any]) -> AdapterConfig:
    """The config of a peft type other than LoRA: the numbers its ΔW reads, checked."""
    fan_in_fan_out = _flag(config_path, "fan_in_fan_out", raw.get("fan_in_fan_out"))
    if peft_type in ("LOHA", "LOKR"):  # LycorisConfig: r, alpha and their per-module patterns
        lycoris = {**raw, "lora_alpha": raw.get("alpha", PEFT_DEFAULT_ALPHA)}
        lycoris = {
            k: v for k, v in lycoris.items() if k in ("r", "lora_alpha", "rank_pattern", "alpha_pattern")
        }
        return replace(_config_from_dict(config_path, lycoris), peft_type=peft_type)
    if peft_type == "ADALORA":
        init_r = _positive_int(config_path, "init_r", raw.get("init_r", 12))
        alpha = _finite(config_path, "lora_alpha", raw.get("lora_alpha", PEFT_DEFAULT_ALPHA))
        return AdapterConfig(init_r, alpha, fan_in_fan_out=fan_in_fan_out, peft_type=peft_type)
    if peft_type == "VERA":
        if raw.get("save_projection", True) is not True:
            raise InputError(
                config_path, "save_projection is false: the shared VeRA projections are not in the adapter"
            )
        r = _positive_int(config_path, "r", raw.get("r", 256))
        return AdapterConfig(r, 0.0, fan_in_fan_out=fan_in_fan_out, peft_type=peft_type)
    if fan_in_fan_out and peft_type in ("OFT", "BOFT"):
        raise InputError(config_path, f"{peft_type} with fan_in_fan_out (Conv1D weights) is not read")
    options: dict[str, float] = {}
    if peft_type == "OFT":
        for key, default in OFT_DEFAULTS.items():
            value = raw.get(key, default)
            value = default if value is None else value
            if key in ("coft", "block_share", "use_cayley_neumann"):
                options[key] = float(_flag(config_path, key, value))
            elif key == "eps":
                options[key] = _finite(config_path, key, value)
            else:
                options[key] = float(_positive_int(config_path, key, value))
    return AdapterConfig(0, 0.0, fan_in_fan_out=fan_in_fan_out, peft_type=peft_type, options=options)


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
        r=r,
        lora_alpha=alpha,
        rank_pattern=rank_pattern,
        alpha_pattern=alpha_pattern,
        use_rslora=flags["use_rslora"],
        use_dora=flags["use_dora"],
        fan_in_fan_out=flags["fan_in_fan_out"],
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
class AdapterModule:
    """One adapted weight: its method kind, its saved tensors by role, and the numbers that scale them.

    Attributes:
        name: Base weight name, e.g. model.layers.0.self_attn.q_proj.weight.
        kind: Delta kind: lora, qlora (LoRA on a quantized base), dora, adalora, loha, lokr, ia3, oft, boft or
            vera.
        keys: (role, safetensors key) of every tensor its ΔW reads, shared ones (VeRA's projections) included.
        rank: The adapter's rank setting r (kept rank r' for AdaLoRA, len(λ_d) for VeRA); None for IA3/OFT/BOFT.
        alpha: α (0 where the method has none).
        scale: peft's scalar on the product: α/r (LoHa, LoKr, LoRA), α/√r (rsLoRA), α/(r₀ + 1e-5) (AdaLoRA), 1.
        options: Other config numbers its form reads (OFT: coft, eps, block_share, Cayley–Neumann terms).
    """

    name: str
    kind: str
    keys: tuple[tuple[str, str], ...]
    rank: int | None
    alpha: float
    scale: float
    options: tuple[tuple[str, float], ...] = ()

    def key(self, role: str) -> str | None:
        """The stored key of one role, or None when the module lacks it."""
        return dict(self.keys).get(role)

    @property
    def a_key(self) -> str:
        """LoRA's A factor key."""
        return dict(self.keys)["lora_A"]

    @property
    def b_key(self) -> str:
        """LoRA's B factor key."""
        return dict(self.keys)["lora_B"]

    @property
    def magnitude_key(self) -> str | None:
        """DoRA's magnitude vector key (None without DoRA)."""
        return self.key("magnitude")


LoraModule = AdapterModule  # the name before methods other than LoRA were read


class AdapterSource:
    """A PEFT adapter directory of a weight-modifying method, read one module's tensors at a time."""

    def __init__(self, path: str | Path, in_memory: tuple[AdapterConfig, TensorSource] | None = None) -> None:
        """Open an adapter directory; `in_memory` = (config, tensors) is the adapter of a live model instead
        (see `AdapterSource.from_state_dict`), and `path` only names it."""
        self.path = Path(path)
        self._file: TensorSource
        if in_memory is not None:
            self.config, self._file = in_memory
            self.weights_path = self.path
        else:
            self.config = parse_adapter_config(self.path)
            weights = self.path / WEIGHTS_FILE
            if not weights.is_file():
                pickles = [f for f in self.path.glob("adapter_model*") if f.suffix in PICKLE_SUFFIXES]
                if pickles:
                    raise refuse_pickle(pickles[0])
                raise InputError(self.path, f"adapter directory has no {WEIGHTS_FILE}")
            self._file = SafetensorsSource(weights)
            self.weights_path = weights
        self.method = METHODS[self.config.peft_type]
        # QLoRA: LoRA trained on a 4-bit base, recognised by the quantization.json deltarank train writes
        self.quantization: QuantizationSpec | None = (
            read_quantization(self.path) if self.config.peft_type == "LORA" and in_memory is None else None
        )
        self.modules, self.unsupported = self._index()
        if not self.modules:
            saved = "/".join(self.method.params)
            raise InputError(weights, f"holds no {self.config.peft_type} module tensors ({saved})")

    @classmethod
    def from_state_dict(
        cls, config: dict[str, Any], tensors: Mapping[str, torch.Tensor], label: str | Path
    ) -> AdapterSource:
        """The adapter of a live peft model, read like a saved one: `config` is its JSON-encoded
        `PeftConfig.to_dict()` (what `adapter_config.json` holds) and `tensors` peft's
        `get_peft_model_state_dict(model)` (the names `adapter_model.safetensors` holds); `label` names it in
        errors. The tensors are read where they are, not copied."""
        path = Path(label)
        parsed = adapter_config_from_dict(config, path / CONFIG_FILE)
        return cls(path, (parsed, MemorySource(path, tensors)))

    def _index(self) -> tuple[dict[str, AdapterModule], list[str]]:
        params = "|".join(self.method.params)
        per_module = re.compile(rf"^(?P<module>.+)\.(?P<param>{params})(?:\.(?!weight$)[^.]+)?(?:\.weight)?$")
        shared_names = "|".join((self.method.shared or {}).keys()) or "(?!)"
        shared_key = re.compile(rf"^(?:base_model\.)?(?P<param>{shared_names})(?:\.[^.]+)?$")
        found: dict[str, dict[str, str]] = {}
        shared: dict[str, str] = {}
        unsupported = []
        for key in self._file.names():
            if m := shared_key.match(key):
                shared[(self.method.shared or {})[m["param"]]] = key
            elif m := per_module.match(key):
                role = ROLE_OF_PARAM.get(m["param"], m["param"])
                found.setdefault(m["module"], {})[role] = key
            else:
                unsupported.append(key)  # modules_to_save copies, embedding LoRA, conv-only tensors, ...
        modules: dict[str, AdapterModule] = {}
        for prefix, keys in found.items():
            keys = {**keys, **shared}
            module_key = canonical_name(prefix)
            for alternatives in self.method.required:
                if not any(role in keys for role in alternatives):
                    raise InputError(
                        self._file.path, f"module {module_key!r} lacks its {' or '.join(alternatives)} tensor"
                    )
            name = f"{module_key}.weight"
            if name in modules:
                raise InputError(self._file.path, f"holds two sets of tensors for module {module_key!r}")
            modules[name] = self._module(name, module_key, keys)
        return modules, unsupported

    def _module(self, name: str, module_key: str, keys: dict[str, str]) -> AdapterModule:
        """The module's kind, rank and scale from its tensors' shapes and the config (peft's rules)."""
        config, kind = self.config, self.method.kind
        rank: int | None = None
        alpha, scale = 0.0, 1.0
        if kind in ("lora", "loha", "lokr"):
            r_config, alpha = config.rank_and_alpha(module_key)
            rank_key = {"lora": "lora_A", "loha": "hada_w1_b"}.get(kind)
            if rank_key is not None:
                if len(shape := self.shape(keys[rank_key])) != 2:
                    raise InputError(
                        self._file.path, f"tensor {keys[rank_key]!r} is not a matrix (shape {shape})"
                    )
                if shape[0] != r_config:
                    raise InputError(
                        self._file.path,
                        f"module {module_key!r} has rank {shape[0]} but the config says r={r_config}",
                    )
            rank, scale = r_config, config.scaling(r_config, alpha)
            if kind == "lora" and "magnitude" in keys:
                kind = "dora"
            elif kind == "lora" and self.quantization is not None:
                kind = "qlora"
        elif kind == "adalora":
            rank = self.shape(keys["lora_A"])[0]  # r' kept by the rank pattern
            alpha = config.lora_alpha
            # peft: scaling = α (r' when α ≤ 0), divided by ranknum + 1e-5 with ranknum = init_r
            scale = (alpha if alpha > 0 else float(rank)) / (config.r + ADALORA_RANKNUM_EPS)
        elif kind == "vera":
            rank = math.prod(self.shape(keys["vera_lambda_d"]))
        return AdapterModule(
            name, kind, tuple(sorted(keys.items())), rank, alpha, scale, tuple(sorted(config.options.items()))
        )

    def shape(self, key: str) -> tuple[int, ...]:
        """Stored shape of one tensor."""
        return tuple(self._file.info(key).shape)

    def shapes(self, name: str) -> dict[str, tuple[int, ...]]:
        """Stored shape of every tensor of one module, by role."""
        return {role: self.shape(key) for role, key in self.modules[name].keys}

    def factor_shapes(self, name: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Shapes of B (out, r) and A (r, in) of one LoRA/DoRA/AdaLoRA module."""
        module = self.modules[name]
        return self.shape(module.b_key), self.shape(module.a_key)

    def magnitude_shape(self, name: str) -> tuple[int, ...] | None:
        """Shape of the DoRA magnitude vector of one module (None without DoRA)."""
        key = self.modules[name].magnitude_key
        return None if key is None else self.shape(key)

    def factor_dtype(self, name: str) -> str:
        """Stored dtype of the module's own tensors (the first of its roles that is not shared)."""
        shared = set((self.method.shared or {}).values())
        key = next(key for role, key in self.modules[name].keys if role not in shared)
        return self._file.info(key).dtype

    def read_tensors(self, name: str) -> dict[str, torch.Tensor]:
        """The saved tensors of one module in their stored dtypes, named by role: `lora_B` (out, r), `lora_A`
        (r, in) and, for DoRA, `magnitude` (out,); for other methods their peft parameter names (see
        `deltarank.io.peft_methods`)."""
        return {role: self._file.read(key) for role, key in self.modules[name].keys}


def is_adapter_dir(path: str | Path) -> bool:
    """True for a directory holding an adapter_config.json."""
    p = Path(path)
    return p.is_dir() and (p / CONFIG_FILE).is_file()
