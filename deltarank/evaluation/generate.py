"""Greedy generation of one answer, with the prompt rendered exactly as training renders it.

A chat prompt (a list of messages) goes through the tokenizer's chat template, or deltarank's ChatML default
when it has none (`deltarank.train.formats.DEFAULT_CHAT_TEMPLATE`), with the generation prompt; a string
prompt is tokenized with the tokenizer's own prefix (BOS), as `Encoder.encode_prompt_completion` does.
"""

from __future__ import annotations

from typing import Any

import torch

from deltarank.evaluation.models import model_device
from deltarank.train.formats import DEFAULT_CHAT_TEMPLATE, DEFAULT_END_OF_TURN

Prompt = str | list[dict[str, str]]


def prompt_ids(tokenizer: Any, prompt: Prompt) -> torch.Tensor:
    """The prompt's token ids, shape (1, T)."""
    if isinstance(prompt, str):
        return tokenizer(prompt, return_tensors="pt", add_special_tokens=True)["input_ids"]
    template = None if getattr(tokenizer, "chat_template", None) else DEFAULT_CHAT_TEMPLATE
    text = tokenizer.apply_chat_template(
        prompt, tokenize=False, add_generation_prompt=True, chat_template=template
    )
    return tokenizer(str(text), return_tensors="pt", add_special_tokens=False)["input_ids"]


@torch.no_grad()
def greedy_answer(model: Any, tokenizer: Any, prompt: Prompt, max_new_tokens: int) -> str:
    """The model's greedy continuation of the prompt, at most `max_new_tokens`: special tokens removed, and for a
    chat prompt rendered with deltarank's default template, cut at its end-of-turn marker."""
    ids = prompt_ids(tokenizer, prompt).to(model_device(model))
    out = model.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=max_new_tokens,
        do_sample=False,
        pad_token_id=tokenizer.pad_token_id,
        use_cache=True,
    )
    return end_of_answer(
        tokenizer, prompt, str(tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True))
    )


def end_of_answer(tokenizer: Any, prompt: Prompt, text: str) -> str:
    """The answer part of a decoded generation: for a chat prompt rendered with deltarank's default template
    (the tokenizer has none), the text before the template's end-of-turn marker, which a model trained on that
    template writes as plain text when its vocabulary has no such special token (Gemma 3's GGUF tokenizer)."""
    if isinstance(prompt, str) or getattr(tokenizer, "chat_template", None):
        return text
    return text.split(DEFAULT_END_OF_TURN, 1)[0]
