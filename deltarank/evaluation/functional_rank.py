"""Functional rank: how many directions of a full fine-tune's ΔW the learning needs (#25 item 3).

Every linear weight of the transformer blocks is set to W_base + ΔW_k, where ΔW_k keeps the top k singular
directions of its ΔW = W_tuned − W_base (the same k in every matrix, capped at its width); every other parameter
(embeddings, norms) keeps its tuned value. With L_k the held-out loss of that model, L₀ the loss with no linear
ΔW at all (k = 0) and L_tuned the tuned model's,

    recovered(k) = (L₀ − L_k) / (L₀ − L_tuned)

is the share of the learning (the loss drop the linear deltas make; of any loss change they make) that the top k
directions carry, and
k₉₀ is the smallest k of the grid with recovered(k) ≥ 0.9. An energy rank counts the directions that hold 90%
of ΔW's energy; k₉₀ counts the ones the model's function needs, which can be far fewer when much of the energy
is optimizer and mini-batch noise (see `benchmarks/results/science.md`).

Weights are compared in float32, after both models are loaded in float32; the SVDs run on the model's device.
Memory: both models and the factors of every ΔW (about three model sizes): meant for the small models a study
trains, not for streaming a 7B pair (the spectrum engine's job).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from deltarank.evaluation.loss import sequence_loss
from deltarank.io.naming import layer_index

KS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
TARGET = 0.9


@torch.no_grad()
def functional_rank(
    base: Any,
    tuned: Any,
    examples: Sequence[tuple[list[int], list[int]]],
    pad_id: int,
    ks: Sequence[int] = KS,
    target: float = TARGET,
) -> dict[str, Any]:
    """recovered(k) for every k of `ks` (up to the widest ΔW) and k₉₀ of a full fine-tune.

    Args:
        base: The base model (float32, eval mode).
        tuned: The fully fine-tuned model (float32, eval mode, same architecture); its weights are changed
            during the measurement and restored before returning.
        examples: Held-out (input_ids, labels) sequences (`deltarank.train.data.build_dataset`).
        pad_id: The padding token id.
        ks: The numbers of directions to keep.
        target: The share of the learning k₉₀ must recover.

    Returns:
        `{"loss_tuned", "loss_without_linear_deltas", "matrices", "ks", "losses", "recovered",
        "k_<pct>"}` (recovered None and k_90 None when the linear deltas do not change the loss at all; k_90
        None when no k of the grid recovers `target`).
    """
    base_weights = dict(base.named_parameters())
    params = {
        name: p
        for name, p in tuned.named_parameters()
        if p.ndim == 2 and layer_index(name) is not None and name in base_weights
    }
    originals = {name: p.detach().clone() for name, p in params.items()}
    factors = {}
    for name, p in params.items():
        delta = p.detach().float() - base_weights[name].detach().float().to(p.device)
        factors[name] = torch.linalg.svd(delta, full_matrices=False)
    widest = max((min(p.shape) for p in params.values()), default=0)
    grid = sorted({min(k, widest) for k in ks if k >= 1})

    def keep(k: int) -> float:
        for name, p in params.items():
            u, s, vh = factors[name]
            top = min(k, s.numel())
            kept = (u[:, :top] * s[:top]) @ vh[:top] if top else torch.zeros_like(originals[name])
            p.copy_((base_weights[name].detach().float().to(p.device) + kept).to(p.dtype))
        return sequence_loss(tuned, examples, pad_id)

    try:
        loss_tuned = sequence_loss(tuned, examples, pad_id)
        loss_zero = keep(0)
        losses = [keep(k) for k in grid]
    finally:
        for name, p in params.items():
            p.copy_(originals[name])
    gain = loss_zero - loss_tuned  # the loss drop of a run that learned; any change counts
    recovered = [None if gain == 0 else (loss_zero - loss) / gain for loss in losses]
    first = next(
        (k for k, share in zip(grid, recovered, strict=True) if share is not None and share >= target), None
    )
    return {
        "loss_tuned": loss_tuned,
        "loss_without_linear_deltas": loss_zero,
        "matrices": len(params),
        "ks": grid,
        "losses": losses,
        "recovered": recovered,
        f"k_{round(target * 100)}": first,
    }
