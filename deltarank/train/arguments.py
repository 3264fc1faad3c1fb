"""The `transformers.TrainingArguments` of a run's config (and the checks that come with them: the device, the
reporter's package), and how many sequences a `max_steps` run consumes.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from deltarank.errors import DeltarankError
from deltarank.train.config import TrainConfig
from deltarank.train.optimizers import optimizer_weight_decay
from deltarank.train.saving import DEFAULT_KEEP

__all__ = ["checkpointing_argument", "sequences_needed", "training_arguments"]


def training_arguments(config: TrainConfig) -> Any:
    """The `transformers.TrainingArguments` of a resolved config.

    Raises:
        DeltarankError: cuda asked for but not available, or an option transformers rejects.
    """
    import torch
    from transformers import TrainingArguments

    from deltarank.io.device import resolve_device

    device = resolve_device(config.device)  # a CUDA device that is not here: the one error text
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device.index)  # the Trainer's single-process device is the current CUDA device
    _check_reporter(config.report_to)
    from deltarank.io import bitsandbytes_gate

    if bitsandbytes_gate.needs_bitsandbytes(config.optim):
        bitsandbytes_gate.allow()  # an 8-bit or paged optimizer runs on bitsandbytes
    eval_steps = config.eval_steps or config.save_steps
    on_cuda = device.type == "cuda"
    amp = config.mixed_precision != "fp32"
    use_cpu = config.device == "cpu" or (amp and not on_cuda)  # bf16 on CPU needs it
    try:
        return TrainingArguments(
            output_dir=config.output_dir,
            per_device_train_batch_size=config.batch_size,
            per_device_eval_batch_size=config.batch_size,
            gradient_accumulation_steps=config.grad_accum,
            learning_rate=config.learning_rate,
            max_steps=config.max_steps or -1,
            num_train_epochs=config.epochs or 1.0,
            lr_scheduler_type=config.lr_scheduler,
            warmup_steps=config.warmup,
            weight_decay=optimizer_weight_decay(
                config.weight_decay, config.weight_decay_mode, config.learning_rate
            ),
            max_grad_norm=config.max_grad_norm,
            optim=config.optim,
            seed=config.seed,
            data_seed=config.seed,
            logging_strategy="steps",
            logging_steps=config.logging_steps,
            save_strategy="steps" if config.save_steps else "no",
            save_steps=config.save_steps or 500,
            save_only_model=config.keep_optimizer_state == "none",
            save_total_limit=DEFAULT_KEEP if config.save_steps is None else None,  # DefaultSaves' checkpoints
            eval_strategy="steps" if (config.eval_data and eval_steps) else "no",
            eval_steps=eval_steps,
            include_num_input_tokens_seen="non_padding",
            bf16=config.mixed_precision == "bf16-mixed",
            fp16=config.mixed_precision == "fp16-mixed",
            use_cpu=use_cpu,
            **checkpointing_argument(TrainingArguments, config.gradient_checkpointing),
            dataloader_pin_memory=on_cuda,
            remove_unused_columns=False,
            disable_tqdm=True,
            report_to=config.report_to,
        )
    except ValueError as exc:
        raise DeltarankError(f"invalid training option: {' '.join(str(exc).split())}") from exc


def checkpointing_argument(arguments_class: Any, enabled: bool) -> dict[str, Any]:
    """Activation checkpointing under the name the installed transformers uses.

    transformers renamed `gradient_checkpointing` to `activation_checkpointing` in its 5.x series; both spell the
    same switch, and a GPU image with an older 5.x (seen: 5.17) rejects the new name.
    """
    names = {f.name for f in dataclasses.fields(arguments_class)}
    name = "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
    return {name: enabled}


REPORTER_PACKAGES = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",)}


def _check_reporter(report_to: str) -> None:
    """--report-to tensorboard|wandb needs its package (event files go to <output>/runs/ for tensorboard)."""
    import importlib.util

    packages = REPORTER_PACKAGES.get(report_to, ())
    if packages and not any(importlib.util.find_spec(p) for p in packages):
        raise DeltarankError(f"--report-to {report_to} needs `pip install {packages[0]}`")


def sequences_needed(config: TrainConfig, args: Any) -> int | None:
    """Sequences a `max_steps` run consumes (built-in data is produced only up to this); None for epochs."""
    if config.max_steps is None:
        return None
    return config.max_steps * config.batch_size * config.grad_accum * args.world_size
