"""Bottleneck adapters (Houlsby et al. 2019), self-contained: peft has none, and AdapterHub's `adapters`
package requires transformers 4 (its transformers-5 support, issue #834, is open).

Each decoder layer gets two adapters: one on the output of its attention block and one on the output of its
MLP block, before the layer's residual additions. An adapter is `h + up(act(down(h)))` with `down`: hidden ->
size and `up`: size -> hidden; `up` starts at zero, so the wrapped model starts as the base model. They run
from forward hooks on the attention and MLP modules and live as `bottleneck_adapter` submodules of them (so
optimizers, `.to()` and state dicts see them).

Saved as `bottleneck_adapter.safetensors` (the adapter tensors only) and `bottleneck_config.json`;
`load_adapter(model, directory)` adds them to a freshly loaded base model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from deltarank.errors import InputError
from deltarank.io.standalone import (
    BOTTLENECK_ATTRIBUTE,
    BOTTLENECK_CONFIG,
    BOTTLENECK_SCHEMA,
    BOTTLENECK_WEIGHTS,
)

WEIGHTS_NAME = BOTTLENECK_WEIGHTS
CONFIG_NAME = BOTTLENECK_CONFIG
SCHEMA = BOTTLENECK_SCHEMA
ATTRIBUTE = BOTTLENECK_ATTRIBUTE
ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "swish": nn.SiLU, "tanh": nn.Tanh}
ATTENTION_NAMES = ("self_attn", "attention", "attn")
MLP_NAMES = ("mlp", "feed_forward", "ffn")


@dataclass(frozen=True)
class BottleneckConfig:
    """Width and nonlinearity of every adapter."""

    size: int
    nonlinearity: str = "swish"


class Bottleneck(nn.Module):
    """`h + up(act(down(h)))`, with `up` initialised to zero (the identity at the start)."""

    def __init__(self, hidden: int, config: BottleneckConfig) -> None:
        super().__init__()
        self.down = nn.Linear(hidden, config.size)
        self.act = ACTIVATIONS[config.nonlinearity]()
        self.up = nn.Linear(config.size, hidden)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden + self.up(self.act(self.down(hidden)))


def _hook(module: nn.Module, args: Any, output: Any) -> Any:
    adapter = getattr(module, ATTRIBUTE)
    if isinstance(output, tuple):  # attention returns (hidden, weights)
        return (adapter(output[0]), *output[1:])
    return adapter(output)


def adapted_blocks(model: nn.Module) -> list[nn.Module]:
    """The attention and MLP modules of every decoder layer, in order.

    Raises:
        InputError: the model has no recognisable decoder layers.
    """
    layers = getattr(getattr(model, "model", model), "layers", None)
    if layers is None:
        raise InputError(type(model).__name__, "bottleneck adapters need a decoder with `model.layers`")
    blocks = []
    for layer in layers:
        for names in (ATTENTION_NAMES, MLP_NAMES):
            block = next((getattr(layer, n) for n in names if hasattr(layer, n)), None)
            if block is None:
                raise InputError(type(layer).__name__, f"no {' / '.join(names)} block for an adapter")
            blocks.append(block)
    return blocks


def add_adapters(model: Any, config: BottleneckConfig) -> Any:
    """Add trainable adapters after every attention and MLP block of `model` (in place); returns it.

    `model.save_pretrained(directory)` then writes only the adapters and their config.
    """
    hidden = int(model.config.hidden_size)
    reference = next(model.parameters())
    for block in adapted_blocks(model):
        adapter = Bottleneck(hidden, config).to(device=reference.device, dtype=torch.float32)
        block.add_module(ATTRIBUTE, adapter)
        block.register_forward_hook(_hook)
    model.bottleneck_config = config
    model.save_pretrained = _saver(model)
    return model


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter tensors of `model`, by their qualified names."""
    return {n: p.detach().contiguous() for n, p in model.state_dict().items() if f".{ATTRIBUTE}." in n}


def save_adapter(model: Any, directory: str | Path) -> None:
    """Write the adapter tensors (safetensors) and their config (JSON) into `directory`."""
    from safetensors.torch import save_file

    from deltarank.io.atomic import write_json

    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    config = model.bottleneck_config
    save_file({n: t.cpu() for n, t in adapter_state_dict(model).items()}, str(folder / WEIGHTS_NAME))
    meta = {"schema": SCHEMA, **asdict(config), "hidden_size": int(model.config.hidden_size)}
    write_json(folder / CONFIG_NAME, meta, indent=2)


def load_adapter(model: Any, directory: str | Path) -> Any:
    """Add the adapters saved in `directory` to a base `model` (in place); returns it.

    Raises:
        InputError: no adapter there, or its tensors do not fit the model.
    """
    folder = Path(directory)
    if not (folder / CONFIG_NAME).is_file():
        raise InputError(folder, f"no {CONFIG_NAME}: not a bottleneck adapter")
    from deltarank.io.standalone import read_adapter_config

    meta = read_adapter_config(folder / CONFIG_NAME)
    add_adapters(model, BottleneckConfig(size=int(str(meta["size"])), nonlinearity=str(meta["nonlinearity"])))
    return load_adapter_weights(model, folder)


def load_adapter_weights(model: Any, directory: str | Path) -> Any:
    """Copy the adapter tensors saved in `directory` into a model that has adapters already (resume).

    Raises:
        InputError: the tensors do not match the model's adapters.
    """
    from safetensors.torch import load_file

    folder = Path(directory)
    tensors = load_file(str(folder / WEIGHTS_NAME))
    if set(tensors) != set(adapter_state_dict(model)):
        raise InputError(folder, "adapter tensors do not match the model's layers")
    model.load_state_dict(tensors, strict=False)
    return model


def _saver(model: Any) -> Any:
    def save_pretrained(save_directory: str | Path, *args: Any, **kwargs: Any) -> None:
        save_adapter(model, save_directory)

    return save_pretrained
