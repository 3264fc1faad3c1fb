"""Which layers a method adapts: `all-linear`, `attention`, `mlp` or named modules, resolved against the model
(`attention` / `mlp` pick the linear layers inside attention or MLP blocks by the module path: `self_attn`,
`attention`, `mlp`, `feed_forward`, ..., so they work beyond Llama), and the checks of per-layer sizes that peft
would otherwise change silently (OFT's block size).
"""

from __future__ import annotations

import difflib
from typing import Any

from deltarank.errors import DeltarankError, OptionError
from deltarank.io.training_methods import ALL_LINEAR

GROUP_MARKERS = {
    "attention": ("attn", "attention"),
    "mlp": ("mlp", "feed_forward", "ffn"),
}


def in_group(name: str, group: str) -> bool:
    """Whether a module path lies in an attention or MLP block (a path part holds one of the group's markers)."""
    return any(m in part.lower() for part in name.split(".")[:-1] for m in GROUP_MARKERS[group])


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
    chosen = [n for n in names if in_group(n, group)]
    if not chosen:
        raise DeltarankError(f"target_modules={group}: no linear layer of the model sits in an {group} block")
    return _leaf_targets(chosen, every_linear)


def _leaf_targets(chosen: list[str], every_linear: list[str]) -> list[str]:
    """Leaf names (`q_proj`) when they select exactly `chosen`; else the full module paths."""
    leaves = {n.rsplit(".", 1)[-1] for n in chosen}
    others = {n.rsplit(".", 1)[-1] for n in every_linear if n not in set(chosen)}
    return sorted(chosen) if leaves & others else sorted(leaves)


def check_block_size(model: Any, targets: str | list[str], size: int, option: str) -> None:
    """Refuse a block size that does not divide the input width of every targeted layer (peft would silently
    change it to another, while the saved configs kept the one asked for), naming the valid sizes nearby.

    Raises:
        DeltarankError: one line with the widths and the nearest valid sizes below and above.
    """
    import torch

    wanted = [targets] if isinstance(targets, str) else targets
    widths = sorted(
        {
            int(module.in_features)
            for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear)
            and any(name == t or name.endswith("." + t) for t in wanted)
        }
    )
    if not widths or all(w % size == 0 for w in widths):
        return
    valid = [b for b in range(1, widths[0] + 1) if all(w % b == 0 for w in widths)]
    nearby = [
        str(b)
        for b in (
            max((b for b in valid if b < size), default=None),
            min((b for b in valid if b > size), default=None),
        )
        if b
    ]
    raise OptionError(
        f"{option} {size} does not divide the input width of every targeted layer "
        f"({', '.join(map(str, widths))}); use {' or '.join(nearby)}"
    )
