"""The configuration of one training run: a frozen dataclass, read from YAML/TOML and overridden by flags.

Keys are the command-line flags with `_` for `-` (`max_steps` for `--max-steps`); a config file may use either
spelling. Unknown keys are errors that suggest the closest valid key.
"""

from __future__ import annotations

import dataclasses
import difflib
import sys
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from deltarank.errors import DeltarankError, InputError

METHODS = ("full", "lora")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "bf16-mixed", "fp16-mixed")
OPTIMIZER_STATE_POLICIES = ("last", "all", "none")
PROGRESS_MODES = ("auto", "bar", "lines", "none")
BATCHINGS = ("auto", "padding-free", "padded")
# Learning rates used when none is given: TRL's SFT default for full fine-tuning, and the LoRA rate of
# Biderman et al. 2024 for code instruction tuning (LoRA wants a ~10x larger rate than full fine-tuning).
DEFAULT_LR = {"full": 2e-5, "lora": 2e-4}
REQUIRED = ("model", "data", "method", "output_dir")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a `deltarank train` run; `resolved()` fills in method-dependent defaults."""

    model: str = field(metadata={"help": "Local Hugging Face directory, a .gguf file, or 'smollm2-135m'."})
    data: str = field(
        metadata={"help": "JSONL file or builtin:code / builtin:math (see `deltarank.train.data`)."}
    )
    method: str = field(metadata={"help": "full (every weight, fp32 master weights) or lora (PEFT adapter)."})
    output_dir: str = field(
        metadata={"help": "Directory for the weights, checkpoints, train_log.jsonl, run.json."}
    )
    eval_data: str | None = field(
        default=None, metadata={"help": "Held-out data for eval loss (same forms)."}
    )
    max_steps: int | None = field(default=None, metadata={"help": "Optimizer steps (exclusive with epochs)."})
    epochs: float | None = field(
        default=None, metadata={"help": "Passes over the data; 1 if neither is given."}
    )
    lr: float | None = field(
        default=None, metadata={"help": "Peak learning rate (default: full 2e-5, lora 2e-4)."}
    )
    batch_size: int = field(default=4, metadata={"help": "Sequences per device per micro-batch."})
    grad_accum: int = field(default=1, metadata={"help": "Micro-batches accumulated per optimizer step."})
    seq_len: int = field(
        default=512, metadata={"help": "Maximum tokens per sequence (packing length for text)."}
    )
    lora_r: int = field(default=16, metadata={"help": "LoRA rank r."})
    lora_alpha: int | None = field(
        default=None, metadata={"help": "LoRA alpha (default 2r, Biderman et al.)."}
    )
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA input."})
    target_modules: str = field(
        default="all-linear",
        metadata={
            "help": "all-linear, attention, mlp, or comma-separated module names (e.g. q_proj,v_proj)."
        },
    )
    rslora: bool = field(default=False, metadata={"help": "Rank-stabilised scaling α/√r instead of α/r."})
    dora: bool = field(default=False, metadata={"help": "Weight-decomposed LoRA (DoRA)."})
    save_steps: int | None = field(default=None, metadata={"help": "Write checkpoint-<step>/ every N steps."})
    resume: bool = field(default=False, metadata={"help": "Continue from the last checkpoint in output_dir."})
    seed: int = field(default=42, metadata={"help": "Seed for initialisation, data order and dropout."})
    device: str = field(default="auto", metadata={"help": "auto, cpu (forces CPU) or cuda."})
    precision: str = field(
        default="fp32",
        metadata={"help": "fp32, or bf16-mixed / fp16-mixed autocast (master weights stay fp32)."},
    )
    lr_scheduler: str = field(
        default="linear", metadata={"help": "transformers scheduler name (linear, cosine…)."}
    )
    warmup: float = field(default=0.0, metadata={"help": "Warm-up steps (int) or fraction of the run (<1)."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm (0 disables)."})
    optim: str = field(
        default="adamw_torch_fused",
        metadata={"help": "transformers optimizer name (its default: AdamW in one fused kernel)."},
    )
    batching: str = field(
        default="auto",
        metadata={
            "help": "auto (padding-free batches where the model keeps sequences apart, else padded), "
            "padding-free, or padded."
        },
    )
    gradient_checkpointing: bool = field(
        default=False, metadata={"help": "Recompute activations in backward."}
    )
    logging_steps: int = field(default=1, metadata={"help": "Write a train_log.jsonl line every N steps."})
    eval_steps: int | None = field(
        default=None, metadata={"help": "Eval every N steps (default: at saves, end)."}
    )
    max_eval_sequences: int | None = field(
        default=64, metadata={"help": "Cap on eval sequences (eval is a full forward pass per sequence)."}
    )
    keep_optimizer_state: str = field(
        default="last",
        metadata={"help": "Which checkpoints keep optimizer state: last (for --resume), all, none."},
    )
    progress: str = field(
        default="auto", metadata={"help": "auto (bar on a terminal, else lines), bar, lines, none."}
    )

    def __post_init__(self) -> None:
        _validate(self)

    @classmethod
    def from_sources(cls, config_file: str | Path | None = None, overrides: Mapping[str, Any] | None = None):
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
        return cls(**{k: _coerce(k, v, config_file) for k, v in values.items()})

    @property
    def learning_rate(self) -> float:
        """The peak learning rate: `lr`, or the method's default."""
        return self.lr if self.lr is not None else DEFAULT_LR[self.method]

    @property
    def alpha(self) -> int:
        """LoRA alpha: `lora_alpha`, or 2r (Biderman et al. 2024's best practice)."""
        return self.lora_alpha if self.lora_alpha is not None else 2 * self.lora_r

    def resolved(self) -> TrainConfig:
        """This config with the defaults that depend on other keys filled in (learning rate, alpha, epochs)."""
        epochs = self.epochs if (self.epochs is not None or self.max_steps is not None) else 1.0
        return dataclasses.replace(self, lr=self.learning_rate, lora_alpha=self.alpha, epochs=epochs)

    def changed_keys(self, other: TrainConfig, ignore: tuple[str, ...] = ("resume",)) -> list[str]:
        """The keys whose values differ from `other` (the `ignore` ones left out)."""
        mine, theirs = self.to_dict(), other.to_dict()
        return [k for k in mine if k not in ignore and mine[k] != theirs[k]]

    def to_dict(self) -> dict[str, Any]:
        """The config as a plain dict (the keys of a config file)."""
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        """Write the config as YAML, loadable again with `from_sources(path)`."""
        from deltarank.io.atomic import write_atomic

        write_atomic(path, yaml.safe_dump(self.to_dict(), sort_keys=False))


def field_names() -> list[str]:
    """The valid config keys, in declaration order."""
    return [f.name for f in dataclasses.fields(TrainConfig)]


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML (.yaml/.yml) or TOML (.toml) config file into a dict with canonical keys.

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
        else:
            raise InputError(file, "config file must end in .yaml, .yml or .toml")
    except (yaml.YAMLError, ValueError) as exc:
        raise InputError(file, f"cannot parse config: {' '.join(str(exc).split())}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError(file, "config file must hold a mapping of keys to values")
    return {_canonical_key(str(k), file): v for k, v in data.items()}


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
        return _convert(value, target)
    except (TypeError, ValueError):
        problem = f"key '{key}' must be {target.__name__}, got {value!r}"
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


def _validate(config: TrainConfig) -> None:
    """Check ranges and choices; raise DeltarankError naming the key."""
    choices = {
        "method": METHODS,
        "device": DEVICES,
        "precision": PRECISIONS,
        "keep_optimizer_state": OPTIMIZER_STATE_POLICIES,
        "progress": PROGRESS_MODES,
        "batching": BATCHINGS,
    }
    for key, allowed in choices.items():
        if getattr(config, key) not in allowed:
            raise DeltarankError(f"{key} must be one of {', '.join(allowed)}, got {getattr(config, key)!r}")
    for key in ("batch_size", "grad_accum", "seq_len", "lora_r", "logging_steps"):
        if getattr(config, key) < 1:
            raise DeltarankError(f"{key} must be a positive integer, got {getattr(config, key)}")
    for key in ("max_steps", "save_steps", "eval_steps", "max_eval_sequences"):
        if getattr(config, key) is not None and getattr(config, key) < 1:
            raise DeltarankError(f"{key} must be a positive integer, got {getattr(config, key)}")
    if config.max_steps is not None and config.epochs is not None:
        raise DeltarankError("give either max_steps or epochs, not both")
    for key in ("epochs", "lr", "lora_alpha"):
        if getattr(config, key) is not None and getattr(config, key) <= 0:
            raise DeltarankError(f"{key} must be positive, got {getattr(config, key)}")
    if not 0.0 <= config.lora_dropout < 1.0:
        raise DeltarankError(f"lora_dropout must be in [0, 1), got {config.lora_dropout}")
    if config.warmup < 0 or config.weight_decay < 0 or config.max_grad_norm < 0:
        raise DeltarankError("warmup, weight_decay and max_grad_norm must not be negative")
    if config.seq_len < 2:
        raise DeltarankError(f"seq_len must be at least 2, got {config.seq_len}")
