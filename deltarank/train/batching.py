"""How a run batches its sequences: padding-free where the model keeps sequences apart, else padded.

A padded batch of instruction data spends most of its compute on padding (`builtin:code` at 4 × 128: about a
third of the tokens). A padding-free batch (`deltarank.train.data.FlatCollator`) holds the same sequences in
one row without padding, so a step trains on exactly what the padded step would, in less time. It is correct
only if the model's attention reads the sequence boundaries from the position ids: transformers' mask
builder does this for the sdpa, eager, flex and flash-attention implementations of the models that use it,
but not every model does, so `attends_within_sequences` checks the loaded model itself before it is used.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from deltarank.errors import DeltarankError
from deltarank.train.data import FlatCollator, PaddingCollator

logger = logging.getLogger(__name__)

PROBE_LENGTHS = (5, 3)  # two short sequences; the second must not see the first
PROBE_TOL = 1e-4  # fp32 logits of the same computation differ by rounding only (~1e-6)


def attends_within_sequences(model: Any) -> bool:
    """Whether `model` gives a sequence the same logits alone as after another one in a flattened row.

    Runs two tiny forward passes in eval mode without gradients (no dropout, no random numbers drawn), so a
    run's random state is the same whether the check ran or not.

    Args:
        model: A causal LM (a `transformers` model or a peft wrapper of one).

    Returns:
        True when the flattened row's second sequence matches its lone logits within `PROBE_TOL`; False when
        it does not, or when the model rejects the inputs.
    """
    first, second = PROBE_LENGTHS
    vocab = model.get_input_embeddings().num_embeddings
    device = model.get_input_embeddings().weight.device
    ids = (torch.arange(first + second, device=device) * 7 + 3) % vocab  # (T,)
    positions = torch.cat([torch.arange(first), torch.arange(second)]).to(device)  # (T,)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            alone = model(input_ids=ids[None, first:], use_cache=False).logits  # (1, second, V)
            flat = model(input_ids=ids[None], position_ids=positions[None], use_cache=False).logits
    except (TypeError, ValueError, RuntimeError) as exc:
        logger.debug("padding-free probe failed: %s", exc)
        return False
    finally:
        model.train(was_training)
    scale = float(alone.abs().max()) or 1.0
    return float((flat[:, first:] - alone).abs().max()) <= PROBE_TOL * scale


def make_collator(batching: str, model: Any, pad_token_id: int) -> FlatCollator | PaddingCollator:
    """The collator for a run's `batching` choice.

    Args:
        batching: `auto` (padding-free when the model keeps flattened sequences apart, else padded),
            `padding-free` (the same, but an error when the model does not), or `padded`.
        model: The model to be trained (checked by `attends_within_sequences` unless `padded`).
        pad_token_id: The tokenizer's padding id (padded batches).

    Raises:
        DeltarankError: `padding-free` asked for a model whose attention crosses sequence boundaries.
    """
    if batching == "padded":
        return PaddingCollator(pad_token_id)
    if attends_within_sequences(model):
        return FlatCollator()
    if batching == "padding-free":
        raise DeltarankError(
            "batching padding-free: this model's attention does not keep flattened sequences apart "
            f"(attention implementation {_attention_name(model)}); use batching padded or auto"
        )
    logger.info("model attention crosses flattened sequence boundaries; using padded batches")
    return PaddingCollator(pad_token_id)


def _attention_name(model: Any) -> str:
    config = getattr(model, "config", None)
    return str(getattr(config, "_attn_implementation", "unknown"))
