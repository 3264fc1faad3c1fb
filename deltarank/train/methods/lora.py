"""LoRA (rsLoRA and DoRA switches) and QLoRA: LoRA on a 4-bit NF4 base.

LoRA defaults follow Biderman et al. 2024 ("LoRA Learns Less and Forgets Less"): adapt all linear layers of
the blocks and set α = 2r.
"""

from __future__ import annotations

from typing import Any

from deltarank.errors import DeltarankError
from deltarank.io.quantization import QLORA_NF4
from deltarank.train.config import TrainConfig
from deltarank.train.methods.base import builds, peft_model, target_modules
from deltarank.train.methods.lora_init import Calibration, init_kwargs, initialise
from deltarank.train.models import keep_nf4_exact


@builds
def lora(model: Any, config: TrainConfig) -> Any:
    """LoRA (Hu et al. 2021) with rsLoRA / DoRA switches; r, α = 2r, all linear layers by default."""
    return lora_model(model, config)


def lora_model(model: Any, config: TrainConfig, calibration: Calibration | None = None) -> Any:
    """The LoRA model, started as `--lora-init` says (`lora_init`: eva and corda read `calibration`, a few of
    the run's training batches; `deltarank.train.methods.wrap_model` passes them)."""
    from peft import LoraConfig

    lora_config = LoraConfig(**lora_kwargs(model, config), **init_kwargs(config))
    return initialise(model, lora_config, config, calibration)


@builds
def qlora(model: Any, config: TrainConfig) -> Any:
    """QLoRA (Dettmers et al. 2023): LoRA on the 4-bit NF4 base `quantization_config` loaded."""
    from peft import LoraConfig, prepare_model_for_kbit_training

    if not getattr(model, "is_loaded_in_4bit", False):
        raise DeltarankError("qlora needs the model loaded in 4 bits (load_model with quantization_config)")
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=config.gradient_checkpointing)
    keep_nf4_exact(model)
    return record_quantization(peft_model(model, LoraConfig(**lora_kwargs(model, config))))


def record_quantization(model: Any) -> Any:
    """Make every save of the adapter (final and checkpoint-<step>) also write `quantization.json`, the NF4
    settings of its base (peft's files do not say the base was quantized; the analysis reads them to form
    the quantisation error). Returns `model`."""
    save = model.save_pretrained

    def save_pretrained(save_directory: str, *args: Any, **kwargs: Any) -> Any:
        saved = save(save_directory, *args, **kwargs)
        QLORA_NF4.write(save_directory)
        return saved

    model.save_pretrained = save_pretrained
    return model


def lora_kwargs(model: Any, config: TrainConfig) -> dict[str, Any]:
    return {
        "r": config.lora_r,
        "lora_alpha": config.alpha,
        "rank_pattern": dict(config.lora_rank_pattern or {}),
        "alpha_pattern": dict(config.alpha_pattern or {}),
        "lora_dropout": config.lora_dropout,
        "target_modules": target_modules(model, config),
        "use_rslora": config.rslora,
        "use_dora": config.dora,
        "bias": "none",
        "task_type": "CAUSAL_LM",
    }
