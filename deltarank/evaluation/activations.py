"""The inputs a model's linear layers see: the second moment Σ_x = E[x xᵀ] of each layer's input over the tokens
of a few sequences (forward hooks), for the activation-weighted spectrum σ(ΔW Σ_x^{1/2})
(`deltarank.analysis.maths.svd.activation_weighted_singular_values`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from deltarank.errors import DeltarankError
from deltarank.evaluation.loss import EVAL_BATCH
from deltarank.evaluation.models import model_device


@torch.no_grad()
def input_second_moments(
    model: Any, examples: Sequence[tuple[list[int], list[int]]], weights: Sequence[str], pad_id: int
) -> dict[str, torch.Tensor]:
    """Σ_x = (1/N) Σ_t x_t x_tᵀ of the input of each named weight's layer over the N real (unpadded) tokens of
    `examples`.

    Args:
        model: The model (eval mode).
        examples: (input_ids, labels) sequences, e.g. a few training sequences (`deltarank.train.data`).
        weights: Parameter names of nn.Linear weights (`model.layers.0.mlp.down_proj.weight`, ...).
        pad_id: The padding token id.

    Returns:
        Σ_x by weight name, (in, in) float64 on the CPU.

    Raises:
        DeltarankError: a name that is not the weight of an nn.Linear of the model.
    """
    modules = dict(model.named_modules())
    layers = {}
    for name in weights:
        layer = modules.get(name.removesuffix(".weight"))
        if not isinstance(layer, torch.nn.Linear) or not name.endswith(".weight"):
            raise DeltarankError(f"{name} is not the weight of a linear layer of the model")
        layers[name] = layer
    sums = {
        name: torch.zeros(layer.in_features, layer.in_features, dtype=torch.float64)
        for name, layer in layers.items()
    }
    mask = torch.zeros(0)  # the current batch's real positions, (B, T)

    def hook(name: str) -> Any:
        def add(_module: Any, inputs: tuple[torch.Tensor, ...]) -> None:
            x = inputs[0][mask.to(inputs[0].device).bool()].to(torch.float64).cpu()  # (real tokens, in)
            sums[name] += x.mT @ x

        return add

    handles = [layer.register_forward_pre_hook(hook(name)) for name, layer in layers.items()]
    tokens = 0
    try:
        for start in range(0, len(examples), EVAL_BATCH):
            chunk = examples[start : start + EVAL_BATCH]
            width = max(len(ids) for ids, _ in chunk)
            ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, (seq, _) in enumerate(chunk):
                ids[row, : len(seq)], mask[row, : len(seq)] = torch.tensor(seq), 1
            model(input_ids=ids.to(model_device(model)), attention_mask=mask.to(model_device(model)))
            tokens += int(mask.sum())
    finally:
        for handle in handles:
            handle.remove()
    return {name: total / max(tokens, 1) for name, total in sums.items()}
