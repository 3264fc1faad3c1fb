"""The virtual-token methods: prompt tuning, prefix tuning and P-tuning (no weight changed)."""

from __future__ import annotations

from typing import Any

from deltarank.train.config import TrainConfig
from deltarank.train.methods.base import builds, peft_model


@builds
def prompt(model: Any, config: TrainConfig) -> Any:
    """Prompt tuning (Lester et al. 2021): learned input embeddings of virtual tokens."""
    from peft import PromptTuningConfig

    return peft_model(
        model, PromptTuningConfig(num_virtual_tokens=config.virtual_tokens, task_type="CAUSAL_LM")
    )


@builds
def prefix(model: Any, config: TrainConfig) -> Any:
    """Prefix tuning (Li & Liang 2021): learned key/value prefixes in every layer (optionally through an MLP)."""
    from peft import PrefixTuningConfig

    kwargs: dict[str, Any] = {}
    if config.encoder_hidden_size is not None:
        kwargs["encoder_hidden_size"] = config.encoder_hidden_size
    return peft_model(
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
    return peft_model(
        model,
        PromptEncoderConfig(
            num_virtual_tokens=config.virtual_tokens,
            encoder_reparameterization_type="MLP",
            task_type="CAUSAL_LM",
            **kwargs,
        ),
    )
