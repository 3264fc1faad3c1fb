"""The one place training methods differ: loading options and wrapping the model, one function per method.

Each method of the registry (`deltarank.io.training_methods.REGISTRY`: names, option sections, learning rates,
ΔW kinds) has one builder here, registered with `@builds` under its name; peft builds all but `full` (the model
unchanged) and `adapter` (`deltarank.train.bottleneck`).

LoRA defaults follow Biderman et al. 2024 ("LoRA Learns Less and Forgets Less"): adapt all linear layers of
the blocks and set α = 2r. The other methods take peft's defaults (its papers' settings). Which layers they
adapt (`--target-modules`) is resolved in `deltarank.train.targets`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from deltarank.errors import DeltarankError
from deltarank.io.quantization import QLORA_NF4, QUANTIZATION_FILE
from deltarank.io.training_methods import REGISTRY
from deltarank.train.config import TrainConfig
from deltarank.train.models import bnb_config, keep_nf4_exact
from deltarank.train.targets import (
    ALL_LINEAR,
    check_block_size,
    in_group,
    linear_module_names,
    resolve_target_modules,
)

logger = logging.getLogger(__name__)


Builder = Callable[[Any, TrainConfig], Any]
# method name -> the function that wraps a model for it; every method of the registry has one (tested).
BUILDERS: dict[str, Builder] = {}


def builds(func: Builder) -> Builder:
    """Register `func` as the builder of the registry's method of the same name."""
    if func.__name__ not in REGISTRY:
        raise AssertionError(f"{func.__name__} is not a method of deltarank.io.training_methods.REGISTRY")
    BUILDERS[func.__name__] = func
    return func


def wrap_model(model: Any, config: TrainConfig) -> Any:
    """Return the model to train: unchanged for `full` (every weight trainable), else the method's wrapper.

    `config` must be resolved (`TrainConfig.resolved()`). Raises DeltarankError for targets the model lacks.
    """
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
    looks only for whole-model or peft weights). Returns `trainer`."""
    if config.method == "adapter":
        from deltarank.train.bottleneck import load_adapter_weights

        def load_checkpoint(checkpoint: str, model: Any = None) -> None:
            load_adapter_weights(model if model is not None else trainer.model, checkpoint)

        trainer._load_from_checkpoint = load_checkpoint
    return trainer


@builds
def full(model: Any, config: TrainConfig) -> Any:
    """Full fine-tuning: every weight trainable."""
    for param in model.parameters():
        param.requires_grad_(True)
    return model


@builds
def lora(model: Any, config: TrainConfig) -> Any:
    """LoRA (Hu et al. 2021) with rsLoRA / DoRA switches; r, α = 2r, all linear layers by default."""
    from peft import LoraConfig

    return _peft(model, LoraConfig(**_lora_kwargs(model, config)))


@builds
def qlora(model: Any, config: TrainConfig) -> Any:
    """QLoRA (Dettmers et al. 2023): LoRA on the 4-bit NF4 base `quantization_config` loaded."""
    from peft import LoraConfig, prepare_model_for_kbit_training

    if not getattr(model, "is_loaded_in_4bit", False):
        raise DeltarankError("qlora needs the model loaded in 4 bits (load_model with quantization_config)")
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=config.gradient_checkpointing)
    keep_nf4_exact(model)
    return record_quantization(_peft(model, LoraConfig(**_lora_kwargs(model, config))))


def record_quantization(model: Any) -> Any:
    """Make every save of the adapter (final and checkpoint-<step>) also write `quantization.json`, the NF4
    settings of its base (peft's files do not say the base was quantized; the analysis reads them to form
    the quantisation error). Returns `model`."""
    from deltarank.io.atomic import write_atomic

    save = model.save_pretrained

    def save_pretrained(save_directory: str, *args: Any, **kwargs: Any) -> Any:
        saved = save(save_directory, *args, **kwargs)
        write_atomic(Path(save_directory) / QUANTIZATION_FILE, QLORA_NF4.to_json())
        return saved

    model.save_pretrained = save_pretrained
    return model


@builds
def ia3(model: Any, config: TrainConfig) -> Any:
    """IA3 (Liu et al. 2022): learned scaling of keys, values and the MLP input of down_proj (peft's default)."""
    from peft import IA3Config

    if config.target_modules is None:
        return _peft(model, IA3Config(task_type="CAUSAL_LM"))
    targets = _targets(model, config)
    names = linear_module_names(model)
    mlp = {n.rsplit(".", 1)[-1] for n in names if in_group(n, "mlp")}
    feedforward = [t for t in targets if t.rsplit(".", 1)[-1] in mlp]
    return _peft(
        model, IA3Config(target_modules=targets, feedforward_modules=feedforward, task_type="CAUSAL_LM")
    )


@builds
def loha(model: Any, config: TrainConfig) -> Any:
    """LoHa (Hyeon-Woo et al. 2022): Hadamard product of two rank-r products."""
    from peft import LoHaConfig

    return _peft(
        model,
        LoHaConfig(
            r=config.loha_r,
            alpha=config.loha_alpha,
            target_modules=_targets(model, config),
            task_type="CAUSAL_LM",
        ),
    )


@builds
def lokr(model: Any, config: TrainConfig) -> Any:
    """LoKr (Yeh et al. 2023): Kronecker product of a small factor and a rank-r product."""
    from peft import LoKrConfig

    return _peft(
        model,
        LoKrConfig(
            r=config.lokr_r,
            alpha=config.lokr_alpha,
            target_modules=_targets(model, config),
            task_type="CAUSAL_LM",
        ),
    )


@builds
def adalora(model: Any, config: TrainConfig) -> Any:
    """AdaLoRA (Zhang et al. 2023): ranks from init_r down to target_r on average, by importance.

    `total_step` is set to the run's real step count when training begins (`AdaLoraAllocator`).
    """
    from peft import AdaLoraConfig

    return _peft(
        model,
        AdaLoraConfig(
            init_r=config.adalora_init_r,
            target_r=config.adalora_target_r,
            lora_alpha=config.adalora_alpha,
            target_modules=_targets(model, config),
            total_step=max(config.max_steps or 0, 2),
            task_type="CAUSAL_LM",
        ),
    )


@builds
def oft(model: Any, config: TrainConfig) -> Any:
    """OFT (Qiu et al. 2023): a block-diagonal orthogonal rotation of each weight's input space."""
    from peft import OFTConfig

    targets = _targets(model, config)
    check_block_size(model, targets, config.oft_block_size, "--oft-block-size")
    return _peft(
        model,
        OFTConfig(
            r=0,
            oft_block_size=config.oft_block_size,
            target_modules=targets,
            task_type="CAUSAL_LM",
        ),
    )


@builds
def boft(model: Any, config: TrainConfig) -> Any:
    """BOFT (Liu et al. 2024): a butterfly-factorised orthogonal rotation and a scale."""
    from peft import BOFTConfig

    return _peft(
        model,
        BOFTConfig(
            boft_block_size=config.boft_block_size,
            boft_n_butterfly_factor=config.boft_butterfly_factor,
            target_modules=_targets(model, config),
            task_type="CAUSAL_LM",
        ),
    )


@builds
def vera(model: Any, config: TrainConfig) -> Any:
    """VeRA (Kopiczko et al. 2024): scaling vectors on shared frozen random projections (saved with it)."""
    from peft import VeraConfig

    return _peft(
        model,
        VeraConfig(
            r=config.vera_r,
            target_modules=_targets(model, config),
            save_projection=True,
            task_type="CAUSAL_LM",
        ),
    )


@builds
def prompt(model: Any, config: TrainConfig) -> Any:
    """Prompt tuning (Lester et al. 2021): learned input embeddings of virtual tokens."""
    from peft import PromptTuningConfig

    return _peft(model, PromptTuningConfig(num_virtual_tokens=config.virtual_tokens, task_type="CAUSAL_LM"))


@builds
def prefix(model: Any, config: TrainConfig) -> Any:
    """Prefix tuning (Li & Liang 2021): learned key/value prefixes in every layer (optionally through an MLP)."""
    from peft import PrefixTuningConfig

    kwargs: dict[str, Any] = {}
    if config.encoder_hidden_size is not None:
        kwargs["encoder_hidden_size"] = config.encoder_hidden_size
    return _peft(
        model,
        PrefixTuningConfig(
            num_virtual_tokens=config.virtual_tokens,
            prefix_projection=config.prefix_projection,
            task_type="CAUSAL_LM",
            **kwargs,
        ),
    )


@builds
def ptuning(model: Any, config: TrainConfig) -> Any:
    """P-tuning (Liu et al. 2021): virtual-token embeddings produced by an MLP prompt encoder."""
    from peft import PromptEncoderConfig

    kwargs: dict[str, Any] = {}
    if config.encoder_hidden_size is not None:
        kwargs["encoder_hidden_size"] = config.encoder_hidden_size
    return _peft(
        model,
        PromptEncoderConfig(
            num_virtual_tokens=config.virtual_tokens,
            encoder_reparameterization_type="MLP",
            task_type="CAUSAL_LM",
            **kwargs,
        ),
    )


@builds
def adapter(model: Any, config: TrainConfig) -> Any:
    """Bottleneck adapters (Houlsby et al. 2019) after every attention and MLP block; the base is frozen."""
    from deltarank.train.bottleneck import BottleneckConfig, add_adapters

    for param in model.parameters():
        param.requires_grad_(False)
    size = config.adapter_size or max(1, int(model.config.hidden_size) // 16)
    add_adapters(model, BottleneckConfig(size=size, nonlinearity=config.adapter_nonlinearity))
    return model


class AdaLoraAllocator(TrainerCallback):
    """AdaLoRA's budget: `total_step` set to the run's steps, then `update_and_allocate` after every step."""

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        peft_config = model.peft_config[model.active_adapter]
        peft_config.total_step = int(state.max_steps)

    def on_optimizer_step(
        self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any
    ) -> None:
        # gradients are still there (zeroed after this event); the step being taken is global_step + 1
        model.base_model.update_and_allocate(state.global_step + 1)


def _peft(model: Any, peft_config: Any) -> Any:
    from peft import get_peft_model

    try:
        return get_peft_model(model, peft_config)
    except ValueError as exc:
        raise DeltarankError(f"cannot build the {peft_config.peft_type.value} adapter: {exc}") from exc


def _lora_kwargs(model: Any, config: TrainConfig) -> dict[str, Any]:
    return {
        "r": config.lora_r,
        "lora_alpha": config.alpha,
        "lora_dropout": config.lora_dropout,
        "target_modules": _targets(model, config),
        "use_rslora": config.rslora,
        "use_dora": config.dora,
        "bias": "none",
        "task_type": "CAUSAL_LM",
    }


def _targets(model: Any, config: TrainConfig) -> str | list[str]:
    return resolve_target_modules(model, config.target_modules or ALL_LINEAR)


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
