"""The values a training run's config may take, and the checks `TrainConfig` runs when it is built.

`CHOICES` also gives `deltarank train`'s options their choices. The checks take the config as `Any`: this
module is imported by `deltarank.train.config` and must not import it back.
"""

from __future__ import annotations

from typing import Any

from deltarank.errors import DeltarankError

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

CHOICES = {
    "method": METHODS,
    "mixed_precision": PRECISIONS,
    "report_to": REPORTERS,
    "keep_optimizer_state": OPTIMIZER_STATE_POLICIES,
    "progress": PROGRESS_MODES,
    "batching": BATCHINGS,
    "adapter_nonlinearity": NONLINEARITIES,
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


def _validate_rank_tracking(config: Any) -> None:
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
