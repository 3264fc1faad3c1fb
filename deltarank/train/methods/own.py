"""Full fine-tuning (every weight trainable) and Houlsby bottleneck adapters (new layers, the base frozen): the
two methods peft does not build."""

from __future__ import annotations

from typing import Any

from deltarank.train.config import TrainConfig
from deltarank.train.methods.base import builds


@builds
def full(model: Any, config: TrainConfig) -> Any:
    """Full fine-tuning: every weight trainable."""
    for param in model.parameters():
        param.requires_grad_(True)
    return model


@builds
def adapter(model: Any, config: TrainConfig) -> Any:
    """Bottleneck adapters (Houlsby et al. 2019) after every attention and MLP block; the base is frozen."""
    from deltarank.train.bottleneck import BottleneckConfig, add_adapters

    for param in model.parameters():
        param.requires_grad_(False)
    size = config.adapter_size or max(1, int(model.config.hidden_size) // 16)
    add_adapters(model, BottleneckConfig(size=size, nonlinearity=config.adapter_nonlinearity))
    return model
