"""The configuration of one training run: a frozen dataclass, read from YAML/TOML and overridden by flags.

Keys are the command-line flags with `_` for `-` (`max_steps` for `--max-steps`); a config file may use either
spelling. Unknown keys are errors that suggest the closest valid key. The dataclass is the one source of truth
for `deltarank train`'s options: `deltarank.cli.train` generates them from these fields (type from the
annotation, help from metadata "help", choices from `CHOICES`, option names from metadata "flags", grouping in
`-h` from metadata "section").

A method's own settings sit in keys prefixed with its name (`loha_r`, `oft_block_size`, ...); a config file may
also give them as a section (`oft: {block_size: 16}` is `oft_block_size: 16`).
"""

from __future__ import annotations

import dataclasses
import difflib
import sys
import typing
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from deltarank.errors import DeltarankError, InputError

METHODS = (
    "full",
    "lora",
    "qlora",
    "ia3",
    "loha",
    "lokr",
    "adalora",
    "oft",
    "boft",
    "vera",
    "prompt",
    "prefix",
    "ptuning",
    "adapter",
)
PROMPT_METHODS = ("prompt", "prefix", "ptuning")  # virtual tokens, no weight changed
DEVICES = ("auto", "cpu", "cuda")  # and cuda:N
PRECISIONS = ("fp32", "bf16-mixed", "fp16-mixed")  # mixed_precision: AMP mode, master weights stay fp32
REPORTERS = ("none", "tensorboard", "wandb")
NONLINEARITIES = ("relu", "gelu", "swish", "tanh")
OPTIMIZER_STATE_POLICIES = ("last", "all", "none")
PROGRESS_MODES = ("auto", "bar", "lines", "none")
BATCHINGS = ("auto", "padding-free", "padded")
# Learning rates used when none is given (README, "Training methods"): TRL's SFT default for full fine-tuning;
# the LoRA rate of Biderman et al. 2024 for code instruction tuning, also QLoRA's (Dettmers et al. 2023) for
# small models, used for LoHa/LoKr/OFT/BOFT (no language-model default in their papers); IA3: T-Few (Liu et al.
# 2022); AdaLoRA: its paper's GLUE range (Zhang et al. 2023); VeRA: its instruction-tuning rate (Kopiczko et al.
# 2024; frozen random projections need a ~10x larger rate than LoRA); prompt, prefix and P-tuning: peft's task
# guides (Lester et al. 2021 used 0.3 with Adafactor); bottleneck adapters: Houlsby et al. 2019's grid middle.
DEFAULT_LR = {
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
REQUIRED = ("model", "data", "method", "output_dir")
# Keys of older config files still read, with a deprecation warning: old key -> current key.
RENAMED_KEYS = {"precision": "mixed_precision"}
DEFAULT_TARGETS = "all-linear"  # every method with target modules but IA3 (peft's per-architecture default)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a `deltarank train` run; `resolved()` fills in method-dependent defaults."""

    model: str = field(
        metadata={"help": "Local Hugging Face directory, a .gguf file, 'smollm2-135m' or 'gemma3-270m'."}
    )
    data: str = field(metadata={"help": "JSONL file or builtin:<name> (see `deltarank.train.data`)."})
    method: str = field(
        metadata={
            "help": "full (every weight), lora, qlora (LoRA on a 4-bit NF4 base), ia3, loha, lokr, adalora, "
            "oft, boft, vera (peft adapters), prompt, prefix, ptuning (virtual tokens) or adapter "
            "(Houlsby bottleneck adapters)."
        }
    )
    output_dir: str = field(
        metadata={
            "help": "Run directory: weights, checkpoints, train_log.jsonl, run.json (must be new or empty).",
            "flags": ("-o", "--output", "--output-dir"),
        }
    )
    eval_data: str | None = field(
        default=None, metadata={"help": "Held-out data for eval loss (same forms)."}
    )
    max_examples: int | None = field(
        default=None,
        metadata={
            "help": "Train on only the first N examples of the data (sequences: records, or packed blocks of "
            "text); a study's data_size. Default: all."
        },
    )
    max_steps: int | None = field(default=None, metadata={"help": "Optimizer steps (exclusive with epochs)."})
    epochs: float | None = field(
        default=None, metadata={"help": "Passes over the data; 1 if neither is given."}
    )
    lr: float | None = field(
        default=None,
        metadata={"help": "Peak learning rate (default per method: full 2e-5, lora 2e-4, ...; see README)."},
    )
    batch_size: int = field(default=4, metadata={"help": "Sequences per device per micro-batch."})
    grad_accum: int = field(default=1, metadata={"help": "Micro-batches accumulated per optimizer step."})
    seq_len: int = field(
        default=512, metadata={"help": "Maximum tokens per sequence (packing length for text)."}
    )
    target_modules: str | None = field(
        default=None,
        metadata={
            "help": "Layers a weight-modifying method adapts: all-linear, attention, mlp, or comma-separated "
            "names (e.g. q_proj,v_proj). Default all-linear; ia3: peft's per-model default (k_proj, v_proj, "
            "down_proj for Llama).",
            "section": "methods",
        },
    )
    lora_r: int = field(
        default=16,
        metadata={
            "help": "LoRA rank r (lora, qlora).",
            "flags": ("--lora-rank", "--lora-r"),
            "section": "lora",
        },
    )
    lora_alpha: int | None = field(
        default=None, metadata={"help": "LoRA alpha (default 2r, Biderman et al.).", "section": "lora"}
    )
    lora_dropout: float = field(
        default=0.05, metadata={"help": "Dropout on the LoRA input.", "section": "lora"}
    )
    rslora: bool = field(
        default=False,
        metadata={"help": "Rank-stabilised scaling α/√r instead of α/r (lora, qlora).", "section": "lora"},
    )
    dora: bool = field(
        default=False, metadata={"help": "Weight-decomposed LoRA (DoRA; lora, qlora).", "section": "lora"}
    )
    loha_r: int = field(
        default=8,
        metadata={"flags": ("--loha-rank",), "help": "LoHa rank of each Hadamard factor.", "section": "loha"},
    )
    loha_alpha: int = field(default=8, metadata={"help": "LoHa alpha (scale α/r).", "section": "loha"})
    lokr_r: int = field(
        default=8,
        metadata={"flags": ("--lokr-rank",), "help": "LoKr rank of the Kronecker factor.", "section": "lokr"},
    )
    lokr_alpha: int = field(default=8, metadata={"help": "LoKr alpha (scale α/r).", "section": "lokr"})
    adalora_init_r: int = field(
        default=12,
        metadata={
            "flags": ("--adalora-init-rank",),
            "help": "AdaLoRA initial rank of every matrix.",
            "section": "adalora",
        },
    )
    adalora_target_r: int = field(
        default=8,
        metadata={
            "flags": ("--adalora-target-rank",),
            "help": "AdaLoRA average rank after budget allocation.",
            "section": "adalora",
        },
    )
    adalora_alpha: int = field(default=8, metadata={"help": "AdaLoRA alpha.", "section": "adalora"})
    oft_block_size: int = field(
        default=32,
        metadata={
            "help": "OFT block size of the block-diagonal rotation (divides in_features).",
            "section": "oft",
        },
    )
    boft_block_size: int = field(
        default=4, metadata={"help": "BOFT block size (divides in_features).", "section": "boft"}
    )
    boft_butterfly_factor: int = field(
        default=1, metadata={"help": "BOFT number of butterfly factors.", "section": "boft"}
    )
    vera_r: int = field(
        default=256,
        metadata={
            "flags": ("--vera-rank",),
            "help": "VeRA rank of the shared random projections.",
            "section": "vera",
        },
    )
    virtual_tokens: int = field(
        default=20,
        metadata={"help": "Virtual tokens learned by prompt, prefix and ptuning.", "section": "prompt"},
    )
    prefix_projection: bool = field(
        default=False,
        metadata={"help": "prefix: reparameterise through an MLP (P-tuning v2 style).", "section": "prompt"},
    )
    encoder_hidden_size: int | None = field(
        default=None,
        metadata={
            "help": "Hidden size of the prefix projection / P-tuning encoder (default: the model's).",
            "section": "prompt",
        },
    )
    adapter_size: int | None = field(
        default=None,
        metadata={
            "help": "Bottleneck width of the adapters (default hidden/16, AdapterHub's Houlsby config).",
            "section": "adapter",
        },
    )
    adapter_nonlinearity: str = field(
        default="swish", metadata={"help": "Adapter nonlinearity.", "section": "adapter"}
    )
    save_steps: int | None = field(default=None, metadata={"help": "Write checkpoint-<step>/ every N steps."})
    resume: bool = field(default=False, metadata={"help": "Continue from the last checkpoint in output_dir."})
    force: bool = field(
        default=False,
        metadata={
            "help": "Replace an existing non-empty output directory (removed once every input check passed)."
        },
    )
    download: bool = field(
        default=False,
        metadata={
            "help": "Fetch an org/name --model missing from the Hugging Face cache (safetensors, GGUF, JSON and "
            "tokenizer files only); without it nothing is downloaded."
        },
    )
    seed: int = field(default=42, metadata={"help": "Seed for initialisation, data order and dropout."})
    device: str = field(default="auto", metadata={"help": "auto, cpu (forces CPU), cuda or cuda:N."})
    mixed_precision: str = field(
        default="fp32",
        metadata={
            "help": "fp32, or bf16-mixed / fp16-mixed autocast (master weights stay fp32). Config key "
            "'precision' of older files is still read."
        },
    )
    report_to: str = field(
        default="none",
        metadata={"help": "Where the Trainer also logs: none, tensorboard (<output>/runs) or wandb."},
    )
    lr_scheduler: str = field(
        default="linear", metadata={"help": "transformers scheduler name (linear, cosine…)."}
    )
    warmup: float = field(default=0.0, metadata={"help": "Warm-up steps (int) or fraction of the run (<1)."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    attention_dropout: float | None = field(
        default=None,
        metadata={
            "help": "Dropout on the attention probabilities while training (default: the model's own)."
        },
    )
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
    track_rank: int = field(
        default=0,
        metadata={
            "help": "Measure the effective ranks of every ΔW every N optimizer steps (and at the last step), "
            "as `deltarank spectrum` does, into train_log.jsonl; 0: off. Not for prompt methods or "
            "bottleneck adapters (no ΔW).",
        },
    )
    track_rank_sample: int | None = field(
        default=None,
        metadata={
            "help": "Full fine-tuning: track N weight matrices, every module type of evenly spaced layers "
            "(first and last included); default two layers' worth (14 for Llama). Their base is kept "
            "in fp32.",
        },
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
        """This config with the defaults that depend on other keys filled in (learning rate, alpha, epochs,
        target modules; padded batches for the prompt methods, whose virtual tokens need them)."""
        epochs = self.epochs if (self.epochs is not None or self.max_steps is not None) else 1.0
        targets = self.target_modules
        if targets is None and self.method != "ia3":
            targets = DEFAULT_TARGETS
        batching = "padded" if self.method in PROMPT_METHODS and self.batching == "auto" else self.batching
        return dataclasses.replace(
            self,
            lr=self.learning_rate,
            lora_alpha=self.alpha,
            epochs=epochs,
            target_modules=targets,
            batching=batching,
        )

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


CHOICES = {
    "method": METHODS,
    "mixed_precision": PRECISIONS,
    "report_to": REPORTERS,
    "keep_optimizer_state": OPTIMIZER_STATE_POLICIES,
    "progress": PROGRESS_MODES,
    "batching": BATCHINGS,
    "adapter_nonlinearity": NONLINEARITIES,
}
SECTIONS = ("lora", "loha", "lokr", "adalora", "oft", "boft", "vera", "prefix", "adapter")
POSITIVE = (
    "batch_size",
    "grad_accum",
    "seq_len",
    "lora_r",
    "logging_steps",
    "loha_r",
    "loha_alpha",
    "lokr_r",
    "lokr_alpha",
    "adalora_init_r",
    "adalora_target_r",
    "adalora_alpha",
    "oft_block_size",
    "boft_block_size",
    "boft_butterfly_factor",
    "vera_r",
    "virtual_tokens",
)
POSITIVE_OR_NONE = (
    "max_examples",
    "max_steps",
    "save_steps",
    "eval_steps",
    "max_eval_sequences",
    "track_rank_sample",
    "encoder_hidden_size",
    "adapter_size",
)


def valid_device(device: str) -> bool:
    """auto, cpu, cuda or cuda:N."""
    return device in DEVICES or (device.startswith("cuda:") and device[5:].isdigit())


def _validate(config: TrainConfig) -> None:
    """Check ranges and choices; raise DeltarankError naming the key."""
    for key, allowed in CHOICES.items():
        if getattr(config, key) not in allowed:
            raise DeltarankError(f"{key} must be one of {', '.join(allowed)}, got {getattr(config, key)!r}")
    if not valid_device(config.device):
        raise DeltarankError(f"device must be one of auto, cpu, cuda, cuda:N, got {config.device!r}")
    for key in POSITIVE:
        if getattr(config, key) < 1:
            raise DeltarankError(f"{key} must be a positive integer, got {getattr(config, key)}")
    for key in POSITIVE_OR_NONE:
        if getattr(config, key) is not None and getattr(config, key) < 1:
            raise DeltarankError(f"{key} must be a positive integer, got {getattr(config, key)}")
    if config.adalora_target_r > config.adalora_init_r:
        raise DeltarankError("adalora_target_r must not exceed adalora_init_r")
    if config.method in PROMPT_METHODS and config.batching == "padding-free":
        raise DeltarankError(
            f"method {config.method} needs padded batches (its virtual tokens precede each row)"
        )
    _validate_rank_tracking(config)
    if config.max_steps is not None and config.epochs is not None:
        raise DeltarankError("give either max_steps or epochs, not both")
    for key in ("epochs", "lr", "lora_alpha"):
        if getattr(config, key) is not None and getattr(config, key) <= 0:
            raise DeltarankError(f"{key} must be positive, got {getattr(config, key)}")
    if not 0.0 <= config.lora_dropout < 1.0:
        raise DeltarankError(f"lora_dropout must be in [0, 1), got {config.lora_dropout}")
    if config.attention_dropout is not None and not 0.0 <= config.attention_dropout < 1.0:
        raise DeltarankError(f"attention_dropout must be in [0, 1), got {config.attention_dropout}")
    if config.warmup < 0 or config.weight_decay < 0 or config.max_grad_norm < 0:
        raise DeltarankError("warmup, weight_decay and max_grad_norm must not be negative")
    if config.seq_len < 2:
        raise DeltarankError(f"seq_len must be at least 2, got {config.seq_len}")


def _validate_rank_tracking(config: TrainConfig) -> None:
    """`track_rank` needs a method that changes weights; `track_rank_sample` is for full fine-tuning."""
    if config.track_rank < 0:
        raise DeltarankError(f"track_rank must be 0 (off) or a positive integer, got {config.track_rank}")
    if config.track_rank and config.method in PROMPT_METHODS:
        raise DeltarankError(
            f"--track-rank: method {config.method} learns virtual tokens and changes no weight, so there is no "
            "ΔW to track"
        )
    if config.track_rank and config.method == "adapter":
        raise DeltarankError(
            "--track-rank: bottleneck adapters add new layers and change no weight, so there is no ΔW to track"
        )
    if config.track_rank_sample is not None and config.method != "full":
        raise DeltarankError(
            f"--track-rank-sample is for full fine-tuning (method {config.method} is tracked on every adapted "
            "matrix from its factors)"
        )
