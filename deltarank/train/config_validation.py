"""The values a training run's config may take, and the checks `TrainConfig` runs when it is built.

`CHOICES` also gives `deltarank train`'s options their choices. The checks take the config as `Any`: this
module is imported by `deltarank.train.config` and must not import it back.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from typing import Any

from deltarank.errors import DeltarankError
from deltarank.io.device import valid_device  # the one device vocabulary
from deltarank.io.training_methods import (
    BASE_REWRITING_INITS,
    LORA_INITS,
    METHOD_NAMES,
    REGISTRY,
    in_family,
    names,
)
from deltarank.train.builtin_self_samples import check_config as check_self_samples
from deltarank.train.optimizers import WEIGHT_DECAY_MODES, check_weight_decay
from deltarank.train.replay import check_replay

METHODS = METHOD_NAMES
PROMPT_METHODS = in_family("prompt")  # virtual tokens, no weight changed
WEIGHT_METHODS = in_family("weights")  # peft on weights
PRECISIONS = ("fp32", "bf16-mixed", "fp16-mixed")  # mixed_precision: AMP mode, master weights stay fp32
REPORTERS = ("none", "tensorboard", "wandb")
NONLINEARITIES = ("relu", "gelu", "swish", "tanh")
OPTIMIZER_STATE_POLICIES = ("last", "all", "none")
PROGRESS_MODES = ("auto", "bar", "lines", "none")
BATCHINGS = ("auto", "padding-free", "padded")
PISSA_NITER = re.compile(r"pissa_niter_[0-9]+")  # lora_init: PiSSA by a randomised SVD of K iterations

CHOICES = {
    "method": METHODS,
    "mixed_precision": PRECISIONS,
    "report_to": REPORTERS,
    "keep_optimizer_state": OPTIMIZER_STATE_POLICIES,
    "progress": PROGRESS_MODES,
    "batching": BATCHINGS,
    "adapter_nonlinearity": NONLINEARITIES,
    "weight_decay_mode": WEIGHT_DECAY_MODES,
}
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
    "eval_steps",
    "max_eval_sequences",
    "track_rank_sample",
    "encoder_hidden_size",
    "adapter_size",
)


# The methods whose options each help section of TrainConfig's fields holds (metadata "section"); a field
# listed in FIELD_METHODS applies to its own methods. Options of other sections apply to every method. Both are
# read from the method registry (`TrainingMethod.sections`, `.own_fields`).
SECTION_METHODS = {
    section: names(m for m in REGISTRY.values() if section in m.sections)
    for section in dict.fromkeys(s for m in REGISTRY.values() for s in m.sections)
}
FIELD_METHODS = {
    key: names(m for m in REGISTRY.values() if key in m.own_fields)
    for key in dict.fromkeys(k for m in REGISTRY.values() for k in m.own_fields)
}


def option_methods(config: Any, key: str) -> tuple[str, ...] | None:
    """The methods the config key `key` applies to, or None when it applies to every method."""
    if key in FIELD_METHODS:
        return FIELD_METHODS[key]
    sections = {f.name: f.metadata.get("section", "") for f in dataclasses.fields(config)}
    return SECTION_METHODS.get(sections.get(key, ""))


def options_not_applying(config: Any, keys: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """Those of `keys` whose option does not apply to `config.method`, each with the methods it is for."""
    found = {}
    for key in keys:
        methods = option_methods(config, key)
        if methods is not None and config.method not in methods:
            found[key] = methods
    return found


def options_of_method(config: Any, method: str) -> list[str]:
    """The keys of a method's own section (lora_r for lora and qlora, oft_block_size for oft, ...): what shapes
    its adapter, so a resumed run must keep them."""
    keys = []
    for f in dataclasses.fields(config):
        section = f.metadata.get("section", "")
        own = section != "methods" and method in SECTION_METHODS.get(section, ())
        if own and method in FIELD_METHODS.get(f.name, (method,)):
            keys.append(f.name)
    return keys


def validate_config(config: Any) -> None:
    """Check a `TrainConfig`'s ranges and choices; raise DeltarankError naming the key."""
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
    if config.save_steps is not None and config.save_steps < 0:
        raise DeltarankError(
            f"save_steps must be 0 (no checkpoints) or a positive integer, got {config.save_steps}"
        )
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
    check_weight_decay(config)
    if config.seq_len < 2:
        raise DeltarankError(f"seq_len must be at least 2, got {config.seq_len}")
    check_self_samples(config)
    check_replay(config)  # replay_fraction in [0, 1), with replay_data
    check_lora_init(config)


def check_lora_init(config: Any) -> None:
    """`lora_init`: one of `LORA_INITS` (pissa_niter_<K> with K a whole number), with method lora; not loftq; a
    base-rewriting one without DoRA (peft's conversion to a plain LoRA drops DoRA's magnitude vector)."""
    init = config.lora_init
    niter = PISSA_NITER.fullmatch(init) if isinstance(init, str) else None
    if niter is None and (init not in LORA_INITS or init == "pissa_niter_K"):
        shown = ", ".join(LORA_INITS).replace("pissa_niter_K", "pissa_niter_<K>")
        raise DeltarankError(f"lora_init must be one of {shown}, got {init!r}")
    if init == "default":
        return
    if config.method != "lora":
        raise DeltarankError(
            f"lora_init {init} is for method lora (method {config.method} starts from peft's default)"
        )
    if init == "loftq":
        raise DeltarankError(
            "lora_init loftq is not supported: peft's LoftQ quantizes on a CUDA/XPU device through bitsandbytes "
            "(no CPU path), and its base change (NF4 rounding) is not low-rank, so no adapter holds W_tuned − W"
        )
    if config.dora and init.startswith(BASE_REWRITING_INITS):
        raise DeltarankError(
            f"lora_init {init} rewrites the base weights and is stored converted to a plain LoRA, which drops "
            "DoRA's magnitude vector: train it without --dora"
        )


def _validate_rank_tracking(config: Any) -> None:
    """`track_rank` needs a method that changes weights; `track_rank_sample` is for full fine-tuning."""
    if config.track_rank < 0:
        raise DeltarankError(f"track_rank must be 0 (off) or a positive integer, got {config.track_rank}")
    entry = REGISTRY[config.method]
    if config.track_rank and not entry.has_delta and entry.family == "prompt":
        raise DeltarankError(
            f"--track-rank: method {config.method} learns virtual tokens and changes no weight, so there is no "
            "ΔW to track"
        )
    if config.track_rank and not entry.has_delta:
        raise DeltarankError(
            f"--track-rank: {entry.display}s add new layers and change no weight, so there is no ΔW to track"
        )
    if config.track_rank_sample is not None and config.method not in FIELD_METHODS["track_rank_sample"]:
        raise DeltarankError(
            f"--track-rank-sample is for full fine-tuning (method {config.method} is tracked on every adapted "
            "matrix from its factors)"
        )
