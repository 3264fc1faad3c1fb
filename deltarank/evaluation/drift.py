"""General-text drift (forgetting): how far a tuned model has moved from the base model's own behaviour.

The forgetting set is the base model's own sampled answers to general prompts (history, cooking, travel, ...),
as chat records (`general_text`): available offline on every machine, never seen in training. A model's drift
is its mean loss per token of those answers (`drift_loss`); forgetting is the rise of that loss from the base
model to the tuned one. `deltarank evaluate --measure drift`, a study's `forgetting` and the reproduction all
measure it here.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from deltarank.evaluation.loss import encode_chats, sequence_losses, trained_tokens
from deltarank.evaluation.models import model_device
from deltarank.train.formats import DEFAULT_CHAT_TEMPLATE

GENERAL_PROMPTS = (
    "Tell me about the history of the Roman Empire.",
    "How do I bake a loaf of bread at home?",
    "What are some tips for travelling on a small budget?",
    "Explain how the water cycle works.",
    "Write a short story about a lighthouse keeper.",
    "What should I consider when adopting a dog?",
    "Describe the main causes of the French Revolution.",
    "How can I improve my sleep?",
    "What is photosynthesis?",
    "Give me advice for a job interview.",
    "Why is the sky blue?",
    "Write a poem about autumn leaves.",
    "How do vaccines work?",
    "What are the benefits of learning a second language?",
    "Summarise the plot of Romeo and Juliet.",
    "How does a bicycle stay upright?",
)
GENERAL_TEXT = "general_text.jsonl"  # the forgetting set's file name next to the measurements
WHOLE = 1 << 30  # a "seq_len" that keeps every token of a general-text record
EMPTY_NOTE = "the base model's general answers are empty: no forgetting set"


@torch.no_grad()
def general_text(
    model: Any,
    tokenizer: Any,
    max_new_tokens: int,
    seed: int,
    progress: Callable[[int, int], None] | None = None,
) -> list[dict[str, Any]]:
    """The base model's own answers to GENERAL_PROMPTS (sampled, fixed seed), as chat records;
    `progress(answered, total)` after each answer."""
    torch.manual_seed(seed)
    records = []
    for index, prompt in enumerate(GENERAL_PROMPTS, start=1):
        messages = [{"role": "user", "content": prompt}]
        template = None if getattr(tokenizer, "chat_template", None) else DEFAULT_CHAT_TEMPLATE
        text = tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True, chat_template=template
        )
        inputs = tokenizer(text, return_tensors="pt", add_special_tokens=False).to(model_device(model))
        out = model.generate(
            **inputs,
            max_new_tokens=max_new_tokens,
            do_sample=True,
            temperature=0.7,
            top_p=0.9,
            pad_token_id=tokenizer.eos_token_id,
            use_cache=True,
        )
        answer = tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()
        records.append({"messages": [*messages, {"role": "assistant", "content": answer}]})
        if progress is not None:
            progress(index, len(GENERAL_PROMPTS))
    return records


def write_general_text(path: Path, records: Sequence[dict[str, Any]]) -> None:
    """Write the forgetting set (one chat record per line), atomically."""
    from deltarank.io.atomic import write_jsonl

    write_jsonl(path, records)


def read_general_text(path: Path) -> list[dict[str, Any]]:
    """The forgetting set `write_general_text` wrote.

    Raises:
        InputError: the file is missing or a line is not a JSON chat record.
    """
    from deltarank.errors import InputError

    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot read the general-text set ({exc.__class__.__name__})") from None
    records = []
    for number, line in enumerate(lines, start=1):
        if not line:
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if not isinstance(record, dict) or not isinstance(record.get("messages"), list):
            raise InputError(path, f'line {number} is not a chat record ({{"messages": [...]}})')
        records.append(record)
    return records


def drift_loss(
    model: Any, tokenizer: Any, records: Sequence[dict[str, Any]], seq_len: int = WHOLE
) -> dict[str, Any]:
    """One model's mean loss per token of the base model's general answers (`general_text` records).

    Args:
        model: The loaded model (eval mode).
        tokenizer: Its tokenizer (the base model's).
        records: The forgetting set.
        seq_len: Tokens kept per record (WHOLE: every token; answers are a few dozen tokens).

    Returns:
        general_loss (None when the answers hold no token, with general_note), general_sequences,
        general_tokens.
    """
    general = encode_chats(tokenizer, records, seq_len)
    tokens = trained_tokens(general)
    losses = sequence_losses(model, general, tokenizer.pad_token_id or 0) if tokens else None
    found: dict[str, Any] = {
        "general_loss": None if losses is None else losses["loss"],
        "general_sequences": len(general),
        "general_tokens": tokens,
    }
    if losses is not None:
        found["per_sequence"] = {"sums": losses["sums"], "counts": losses["counts"]}
    if not tokens:
        found["general_note"] = EMPTY_NOTE
    return found
