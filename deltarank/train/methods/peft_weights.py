"""The other peft methods that change weights: IA3, LoHa, LoKr, AdaLoRA, OFT, BOFT and VeRA (each with its
paper's defaults, as peft sets them)."""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback

from deltarank.train.config import TrainConfig
from deltarank.train.methods.base import builds, peft_model, target_modules
from deltarank.train.targets import check_block_size, in_group, linear_module_names


@builds
def ia3(model: Any, config: TrainConfig) -> Any:
    """IA3 (Liu et al. 2022): learned scaling of keys, values and the MLP input of down_proj (peft's default)."""
    from peft import IA3Config

    if config.target_modules is None:
        return peft_model(model, IA3Config(task_type="CAUSAL_LM"))
    targets = target_modules(model, config)
    names = linear_module_names(model)
    mlp = {n.rsplit(".", 1)[-1] for n in names if in_group(n, "mlp")}
    feedforward = [t for t in targets if t.rsplit(".", 1)[-1] in mlp]
    return peft_model(
        model, IA3Config(target_modules=targets, feedforward_modules=feedforward, task_type="CAUSAL_LM")
    )


@builds
def loha(model: Any, config: TrainConfig) -> Any:
    """LoHa (Hyeon-Woo et al. 2022): Hadamard product of two rank-r products."""
    from peft import LoHaConfig

    return peft_model(
        model,
        LoHaConfig(
            r=config.loha_r,
            alpha=config.loha_alpha,
            target_modules=target_modules(model, config),
            task_type="CAUSAL_LM",
        ),
    )


@builds
def lokr(model: Any, config: TrainConfig) -> Any:
    """LoKr (Yeh et al. 2023): Kronecker product of a small factor and a rank-r product."""
    from peft import LoKrConfig

    return peft_model(
        model,
        LoKrConfig(
            r=config.lokr_r,
            alpha=config.lokr_alpha,
            target_modules=target_modules(model, config),
            task_type="CAUSAL_LM",
        ),
    )


@builds
def adalora(model: Any, config: TrainConfig) -> Any:
    """AdaLoRA (Zhang et al. 2023): ranks from init_r down to target_r on average, by importance.

    `total_step` is set to the run's real step count when training begins (`AdaLoraAllocator`).
    """
    from peft import AdaLoraConfig

    return peft_model(
        model,
        AdaLoraConfig(
            init_r=config.adalora_init_r,
            target_r=config.adalora_target_r,
            lora_alpha=config.adalora_alpha,
            target_modules=target_modules(model, config),
            total_step=max(config.max_steps or 0, 2),
            task_type="CAUSAL_LM",
        ),
    )


@builds
def oft(model: Any, config: TrainConfig) -> Any:
    """OFT (Qiu et al. 2023): a block-diagonal orthogonal rotation of each weight's input space."""
    from peft import OFTConfig

    targets = target_modules(model, config)
    check_block_size(model, targets, config.oft_block_size, "--oft-block-size")
    return peft_model(
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

    return peft_model(
        model,
        BOFTConfig(
            boft_block_size=config.boft_block_size,
            boft_n_butterfly_factor=config.boft_butterfly_factor,
            target_modules=target_modules(model, config),
            task_type="CAUSAL_LM",
        ),
    )


@builds
def vera(model: Any, config: TrainConfig) -> Any:
    """VeRA (Kopiczko et al. 2024): scaling vectors on shared frozen random projections (saved with it)."""
    from peft import VeraConfig

    return peft_model(
        model,
        VeraConfig(
            r=config.vera_r,
            target_modules=target_modules(model, config),
            save_projection=True,
            task_type="CAUSAL_LM",
        ),
    )


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
