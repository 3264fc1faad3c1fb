"""The one place full and LoRA runs differ: wrapping the model.

LoRA defaults follow Biderman et al. 2024 ("LoRA Learns Less and Forgets Less"): adapt all linear layers of
the blocks and set α = 2r. `attention` / `mlp` pick the linear layers inside attention or MLP blocks by the
module path (`self_attn`, `attention`, `mlp`, `feed_forward`, ...), so they work beyond Llama.
"""

from __future__ import annotations

import difflib
import logging
from typing import Any

from deltarank.errors import DeltarankError
from deltarank.train.config import TrainConfig

logger = logging.getLogger(__name__)

ALL_LINEAR = "all-linear"
GROUP_MARKERS = {
    "attention": ("attn", "attention"),
    "mlp": ("mlp", "feed_forward", "ffn"),
}


def wrap_model(model: Any, config: TrainConfig) -> Any:
    """Return the model to train: unchanged for `full` (every weight trainable), a PeftModel for `lora`."""
    if config.method == "full":
        for param in model.parameters():
            param.requires_grad_(True)
        return model
    from peft import LoraConfig, get_peft_model

    lora_config = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.alpha,
        lora_dropout=config.lora_dropout,
        target_modules=resolve_target_modules(model, config.target_modules),
        use_rslora=config.rslora,
        use_dora=config.dora,
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora_config)


def linear_module_names(model: Any, include_head: bool = False) -> list[str]:
    """Qualified names of the linear layers a LoRA adapter may target (the output head excluded)."""
    import torch

    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    names = []
    for name, module in model.named_modules():
        if module is head and not include_head:
            continue
        if isinstance(module, torch.nn.Linear) or type(module).__name__ == "Conv1D":
            names.append(name)
    return names


def resolve_target_modules(model: Any, spec: str) -> str | list[str]:
    """Turn `all-linear`, `attention`, `mlp` or `a,b,c` into peft's `target_modules`.

    Raises:
        DeltarankError: a group matches no layer, or a named module is not a linear layer of the model.
    """
    names = linear_module_names(model)
    if spec == ALL_LINEAR:
        return _leaf_targets(names, linear_module_names(model, include_head=True))
    if spec in GROUP_MARKERS:
        return _group_targets(names, spec, linear_module_names(model, include_head=True))
    wanted = [n.strip() for n in spec.split(",") if n.strip()]
    leaves = sorted({n.rsplit(".", 1)[-1] for n in names})
    for name in wanted:
        if not any(n == name or n.endswith("." + name) for n in names):
            close = difflib.get_close_matches(name, leaves, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f"; linear layers: {', '.join(leaves)}"
            raise DeltarankError(f"target module '{name}' is not a linear layer of the model{hint}")
    return wanted


def _group_targets(names: list[str], group: str, every_linear: list[str]) -> list[str]:
    """The linear layers inside one block type (a module path part contains one of the group's markers)."""
    markers = GROUP_MARKERS[group]
    chosen = [n for n in names if any(m in part.lower() for part in n.split(".")[:-1] for m in markers)]
    if not chosen:
        raise DeltarankError(f"target_modules={group}: no linear layer of the model sits in an {group} block")
    return _leaf_targets(chosen, every_linear)


def _leaf_targets(chosen: list[str], every_linear: list[str]) -> list[str]:
    """Leaf names (`q_proj`) when they select exactly `chosen`; else the full module paths."""
    leaves = {n.rsplit(".", 1)[-1] for n in chosen}
    others = {n.rsplit(".", 1)[-1] for n in every_linear if n not in set(chosen)}
    return sorted(chosen) if leaves & others else sorted(leaves)


def parameter_counts(model: Any) -> tuple[int, int]:
    """(trainable, total) parameters, each tied tensor counted once."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
