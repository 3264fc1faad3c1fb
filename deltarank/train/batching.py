"""How a run batches its sequences: padding-free where the model keeps sequences apart, else padded.

A padded batch of instruction data spends most of its compute on padding (`builtin:code` at 4 × 128: about a
third of the tokens). A padding-free batch (`deltarank.train.data.FlatCollator`) holds the same sequences in
one row without padding, so a step trains on exactly what the padded step would, in less time. It is correct
only if the model's attention reads the sequence boundaries from the position ids: transformers' mask
builder does this for the sdpa, eager, flex and flash-attention implementations of the models that use it,
but not every model does, so `keeps_sequences_apart` checks the loaded model itself before it is used.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from deltarank.errors import DeltarankError
from deltarank.train.data import FlatCollator, PaddingCollator

logger = logging.getLogger(__name__)

PROBE_LENGTHS = (5, 3)  # two short sequences; the second must not see the first
PROBE_TOL = 1e-4  # fp32 results of the same computation differ by rounding only (~1e-6)


def keeps_sequences_apart(model: Any, collator: FlatCollator) -> bool:
    """Whether `model` computes on `collator`'s flattened batch what it computes on each sequence alone.

    Two short sequences are run flattened and one at a time; the logits the flattened batch keeps must match
    the lone ones at the same positions (no attention across the boundary, positions restarted), and its loss
    the mean over the same trained tokens. Runs in eval mode without gradients (no dropout, no random numbers
    drawn), so a run's random state is the same whether the check ran or not.

    Args:
        model: A causal LM (a `transformers` model or a peft wrapper of one).
        collator: The padding-free collator to check.

    Returns:
        True when both match within `PROBE_TOL`; False when they do not, or when the model rejects the inputs.
    """
    vocab = model.get_input_embeddings().num_embeddings
    device = model.get_input_embeddings().weight.device
    features, start = [], 0
    for n in PROBE_LENGTHS:
        ids = [(7 * t + 3) % vocab for t in range(start, start + n)]
        features.append({"input_ids": ids, "labels": ids})
        start += n
    batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in collator(features).items()}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            flat = model(**batch)
            alone = [model(**_single(f, device)) for f in features]
    except (TypeError, ValueError, RuntimeError, IndexError) as exc:
        logger.debug("padding-free check failed: %s", exc)
        return False
    finally:
        model.train(was_training)
    expected = torch.cat([a.logits[0] for a in alone])  # (ΣT, V)
    if "logits_to_keep" in batch:
        expected = expected[batch["logits_to_keep"]]
    if flat.logits[0].shape != expected.shape:
        return False
    trained = [n - 1 for n in PROBE_LENGTHS]
    loss = sum(float(a.loss) * k for a, k in zip(alone, trained, strict=True)) / sum(trained)
    scale = float(expected.abs().max()) or 1.0
    logits_match = float((flat.logits[0] - expected).abs().max()) <= PROBE_TOL * scale
    return logits_match and abs(float(flat.loss) - loss) <= PROBE_TOL * max(abs(loss), 1.0)


def _single(feature: dict[str, list[int]], device: Any) -> dict[str, Any]:
    """One sequence as a batch of one, with no padding and nothing else in the row."""
    ids = torch.tensor([feature["input_ids"]], device=device)
    return {"input_ids": ids, "labels": torch.tensor([feature["labels"]], device=device), "use_cache": False}


def make_collator(batching: str, model: Any, pad_token_id: int) -> FlatCollator | PaddingCollator:
    """The collator for a run's `batching` choice.

    Padding-free batches that project only the trained positions are tried first, then padding-free batches
    with every position's logits (for a model whose forward has no `logits_to_keep` positions).

    Args:
        batching: `auto` (padding-free when the model keeps flattened sequences apart, else padded),
            `padding-free` (the same, but an error when the model does not), or `padded`.
        model: The model to be trained (checked by `keeps_sequences_apart` unless `padded`).
        pad_token_id: The tokenizer's padding id (padded batches).

    Raises:
        DeltarankError: `padding-free` asked for a model whose attention crosses sequence boundaries.
    """
    if batching == "padded":
        return PaddingCollator(pad_token_id)
    for collator in (FlatCollator(trained_logits_only=True), FlatCollator(trained_logits_only=False)):
        if keeps_sequences_apart(model, collator):
            return collator
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
