"""Wrapping a model for its training method: one builder per method of the registry, one module per family.

Each method of the registry (`deltarank.io.training_methods.REGISTRY`: names, option sections, learning rates,
ΔW kinds) has one builder, registered with `@builds` (`base`) under its name, in the module of its family, the
way peft keeps one folder per tuner: `own` (full fine-tuning and bottleneck adapters, which peft does not
build), `lora` (lora, qlora), `peft_weights` (ia3, loha, lokr, adalora, oft, boft, vera) and `prompt` (prompt,
prefix, ptuning). Which layers they adapt (`--target-modules`) is resolved in `deltarank.train.targets`.
"""

from __future__ import annotations

import math
from typing import Any

from deltarank.io.quantization import QLORA_NF4
from deltarank.io.training_methods import REGISTRY
from deltarank.train.config import TrainConfig
from deltarank.train.methods import lora, own, peft_weights, prompt
from deltarank.train.methods.base import BUILDERS, Builder, builds
from deltarank.train.methods.lora import record_quantization
from deltarank.train.methods.lora_init import Calibration, init_record, load_trainable, rewrites_base
from deltarank.train.methods.peft_weights import AdaLoraAllocator
from deltarank.train.models import bnb_config

__all__ = [
    "BUILDERS",
    "AdaLoraAllocator",
    "Builder",
    "Calibration",
    "adapt_trainer",
    "base_parameter_count",
    "builds",
    "init_record",
    "method_callbacks",
    "parameter_counts",
    "quantization_config",
    "record_quantization",
    "wrap_model",
]
FAMILIES = (own, lora, peft_weights, prompt)  # imported for their @builds


def wrap_model(model: Any, config: TrainConfig, calibration: Calibration | None = None) -> Any:
    """Return the model to train: unchanged for `full` (every weight trainable), else the method's wrapper.

    `config` must be resolved (`TrainConfig.resolved()`). `calibration` (the run's train set) is what LoRA's
    data-driven `--lora-init` (eva, corda) reads. Raises DeltarankError for targets the model lacks.
    """
    if config.method == "lora":
        return lora.lora_model(model, config, calibration)
    return BUILDERS[config.method](model, config)


def quantization_config(method: str) -> Any | None:
    """The `quantization_config` for `from_pretrained` of the base a `method` trains on: QLoRA's 4-bit NF4 with
    double quantisation, else None."""
    return bnb_config(QLORA_NF4) if REGISTRY[method].quantized_base else None


def method_callbacks(config: TrainConfig) -> list[Any]:
    """Trainer callbacks a method needs (AdaLoRA's rank allocation after every optimizer step)."""
    return [AdaLoraAllocator()] if config.method == "adalora" else []


def adapt_trainer(trainer: Any, config: TrainConfig) -> Any:
    """Method-specific Trainer changes: bottleneck adapters resume from their own checkpoint files (the Trainer
    looks only for whole-model or peft weights), and so does LoRA with a base-rewriting `--lora-init` (its
    checkpoint's adapter is the converted one; the trained factors are beside it). Returns `trainer`."""
    if config.method == "adapter":
        from deltarank.train.bottleneck import load_adapter_weights

        def load_checkpoint(checkpoint: str, model: Any = None) -> None:
            load_adapter_weights(model if model is not None else trainer.model, checkpoint)

        trainer._load_from_checkpoint = load_checkpoint
    elif config.method == "lora" and rewrites_base(config.lora_init):  # resume the raw factors

        def load_factors(checkpoint: str, model: Any = None) -> None:
            load_trainable(model if model is not None else trainer.model, checkpoint)

        trainer._load_from_checkpoint = load_factors
    return trainer


def parameter_counts(model: Any) -> tuple[int, int]:
    """(trainable, total) parameters, each tied tensor counted once (a 4-bit weight by its unpacked size)."""
    trainable = sum(_numel(p) for p in model.parameters() if p.requires_grad)
    total = sum(_numel(p) for p in model.parameters())
    return trainable, total


def base_parameter_count(model: Any, method: str) -> int:
    """Parameters of the base model: all for full fine-tuning, else the frozen ones (adapters train alone)."""
    if REGISTRY[method].family == "full":
        return parameter_counts(model)[1]
    return sum(
        _numel(p) for n, p in model.named_parameters() if not p.requires_grad and not n.endswith("ranknum")
    )


def _numel(param: Any) -> int:
    shape = getattr(getattr(param, "quant_state", None), "shape", None)  # bitsandbytes Params4bit
    return int(math.prod(shape)) if shape is not None else int(param.numel())
