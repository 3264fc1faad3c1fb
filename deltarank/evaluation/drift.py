"""Forgetting as a divergence: the mean per-token KL(base ‖ tuned) on the base model's own samples.

The forgetting set (`general_text`) is the base model's own answers to general prompts (history, cooking,
travel, ...): `samples` answers per prompt of at most `max_new_tokens` tokens, drawn at temperature 1 with no
truncation by the sampler the self-sample null uses too (`deltarank.train.untruncated_sampling`: softmax of the
logits, no top-k, top-p or other setting of the model's generation_config), so each token y_t is a draw from
p_base(· | x, y_<t); the draws use a private generator seeded with the set's seed. Its
records keep the sampled token ids, which are scored exactly as drawn (never re-tokenized from text). A model's
drift (`drift_loss`) is its mean loss per token of those answers, and forgetting is

    general_loss_rise = (1/N) Σ_t [log p_base(y_t | x, y_<t) − log p_tuned(y_t | x, y_<t)]
                      = tuned general_loss − base general_loss,

over the N sampled answer tokens of the set (each answer's stop token included when it was drawn). Because
E_{y_t ~ p_base}[log p_base(y_t) − log p_tuned(y_t) | x, y_<t] = KL(p_base(· | x, y_<t) ‖ p_tuned(· | x, y_<t)),
it is a Monte Carlo estimate of the mean per-token KL(base ‖ tuned) over the sampled prefixes, never negative in
expectation: unbiased when every answer runs to `max_new_tokens` (the sum is unbiased for Σ_t KL_t always; an
answer that stops early makes N random, and the mean a ratio estimate whose bias shrinks as 1/sequences). Its
95% interval is the paired bootstrap over the sequences
(`deltarank.evaluation.paired`); an interval entirely below 0 (`below_zero`) means the set was not drawn from
this base model, and it is reported as such, never as a negative forgetting. `deltarank evaluate --measure
drift`, a study's `forgetting` and the reproduction all measure it here. Each record is stamped with how it was
drawn (`sampling`), so a set drawn otherwise (an older one at T = 0.7, top_p 0.9, other sizes) is never reused
(`current_general_text`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from deltarank.evaluation import defaults
from deltarank.evaluation.loss import sequence_losses, trained_tokens
from deltarank.evaluation.models import model_device
from deltarank.train.formats import DEFAULT_CHAT_TEMPLATE, IGNORE_INDEX
from deltarank.train.untruncated_sampling import TEMPERATURE, TOP_K, TOP_P, draw_untruncated

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
METRIC = "kl_base_tuned_per_token"  # what general_loss_rise is: the mean per-token KL(base ‖ tuned), nats
EMPTY_NOTE = "the base model's general answers are empty: no forgetting set"
BELOW_ZERO = "below 0 beyond its 95% interval"
BELOW_ZERO_WHY = "a KL divergence is never negative: the forgetting set is not this base model's own samples"


def sampling(answer_tokens: int, samples: int, seed: int) -> dict[str, Any]:
    """How a forgetting set is drawn: stamped on each record, recorded beside each measurement on it."""
    return {
        "temperature": TEMPERATURE,
        "top_p": TOP_P,
        "top_k": TOP_K,
        "samples_per_prompt": samples,
        "answer_tokens": answer_tokens,
        "seed": seed,
    }


@torch.no_grad()
def general_text(
    model: Any,
    tokenizer: Any,
    max_new_tokens: int,
    seed: int,
    samples: int = defaults.GENERAL_SAMPLES,
    progress: Callable[[int, int], None] | None = None,
) -> list[dict[str, Any]]:
    """The base model's own answers to GENERAL_PROMPTS, `samples` per prompt drawn at T = 1 without truncation
    (seeded: the same seed and device give the same set), as chat records with their token ids and `sampling`
    stamp; `progress(answered, total)` after each prompt."""
    generator = torch.Generator(device=model_device(model)).manual_seed(seed)
    stamp = sampling(max_new_tokens, samples, seed)
    records = []
    for index, prompt in enumerate(GENERAL_PROMPTS, start=1):
        messages = [{"role": "user", "content": prompt}]
        prompt_ids = chat_prompt_ids(tokenizer, messages)
        for answer_ids in sample_answers(model, tokenizer, prompt_ids, samples, max_new_tokens, generator):
            answer = tokenizer.decode(answer_ids, skip_special_tokens=True)
            records.append(
                {
                    "messages": [*messages, {"role": "assistant", "content": answer}],
                    "prompt_ids": prompt_ids,
                    "answer_ids": answer_ids,
                    "sampling": stamp,
                }
            )
        if progress is not None:
            progress(index, len(GENERAL_PROMPTS))
    return records


def chat_prompt_ids(tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    """The token ids of a chat's prompt with the assistant turn opened (the tokenizer's chat template, or the
    training default when it has none)."""
    template = None if getattr(tokenizer, "chat_template", None) else DEFAULT_CHAT_TEMPLATE
    text = tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True, chat_template=template
    )
    return [int(t) for t in tokenizer(text, add_special_tokens=False)["input_ids"]]


def sample_answers(
    model: Any,
    tokenizer: Any,
    prompt_ids: list[int],
    samples: int,
    max_new_tokens: int,
    generator: torch.Generator | None = None,
) -> list[list[int]]:
    """`samples` answers to one prompt drawn from the model's own distribution (T = 1, no truncation:
    `deltarank.train.untruncated_sampling.draw_untruncated`, with `generator`, None: torch's global one), in one
    batch; each ends at its first stop token (kept: it was drawn too) or after `max_new_tokens`."""
    stops = stop_ids(model, tokenizer)
    prefix = torch.tensor([prompt_ids] * samples, dtype=torch.long, device=model_device(model))
    out = draw_untruncated(model, prefix, max_new_tokens, generator, stops)
    return [_until_stop(row, set(stops)) for row in out[:, len(prompt_ids) :].tolist()]


def stop_ids(model: Any, tokenizer: Any) -> list[int]:
    """The tokens that end an answer: the model's generation_config eos_token_id(s) and the tokenizer's."""
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    listed = configured if isinstance(configured, list | tuple) else [configured]
    return sorted({int(t) for t in [*listed, tokenizer.eos_token_id] if t is not None})


def _until_stop(ids: list[int], stops: set[int]) -> list[int]:
    """`ids` up to and including the first stop token (the padding after it dropped)."""
    for position, token in enumerate(ids):
        if token in stops:
            return ids[: position + 1]
    return ids


def below_zero(interval: Sequence[float | None] | None) -> bool:
    """Whether a KL estimate's 95% interval [low, high] lies entirely below 0 (`BELOW_ZERO_WHY`)."""
    return interval is not None and len(interval) == 2 and interval[1] is not None and interval[1] < 0


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
    from deltarank.io.jsonl import iter_jsonl

    records = []
    for number, record in iter_jsonl(path, "the general-text set"):
        if not isinstance(record.get("messages"), list):
            raise InputError(path, f'line {number} is not a chat record ({{"messages": [...]}})')
        records.append(record)
    return records


def current_general_text(
    path: Path, answer_tokens: int, samples: int, seed: int | None = None
) -> list[dict[str, Any]] | None:
    """The forgetting set at `path` when it was drawn as asked, else None (missing, unreadable, or drawn
    otherwise: an older set without token ids or stamp, at T = 0.7 and top_p 0.9, of other sizes or seed).

    Args:
        path: The set's file (`GENERAL_TEXT` in a base measurement's folder).
        answer_tokens: Tokens per answer asked for (`max_new_tokens` of `general_text`).
        samples: Samples per prompt asked for.
        seed: The seed asked for; None: any seed (a run measured against its base's set).
    """
    from deltarank.errors import InputError

    if not path.is_file():
        return None
    try:
        records = read_general_text(path)
    except InputError:
        return None
    stamp = records[0].get("sampling") if records else None
    seed = stamp.get("seed") if seed is None and isinstance(stamp, dict) else seed
    if not isinstance(seed, int):
        return None
    wanted = sampling(answer_tokens, samples, seed)
    fits = len(records) == len(GENERAL_PROMPTS) * samples and all(
        r.get("sampling") == wanted and "prompt_ids" in r and "answer_ids" in r for r in records
    )
    return records if fits else None


def drift_loss(model: Any, tokenizer: Any, records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One model's mean loss per token of the base model's sampled answers (`general_text` records), taken on
    the token ids as drawn.

    Args:
        model: The loaded model (eval mode).
        tokenizer: Its tokenizer (the base model's).
        records: The forgetting set.

    Returns:
        metric (what a rise of general_loss estimates: `METRIC`), sampling (the records' stamp), general_loss
        (None when the answers hold no token, with general_note), general_sequences, general_tokens and
        per_sequence (each answer's summed loss and token count: what the paired bootstrap pairs).

    Raises:
        InputError: a record without token ids (a set written before they were kept: sample it again).
    """
    general = scored_examples(records)
    tokens = trained_tokens(general)
    losses = sequence_losses(model, general, tokenizer.pad_token_id or 0) if tokens else None
    found: dict[str, Any] = {
        "metric": METRIC,
        "sampling": records[0].get("sampling") if records else None,
        "general_loss": None if losses is None else losses["loss"],
        "general_sequences": len(general),
        "general_tokens": tokens,
    }
    if losses is not None:
        found["per_sequence"] = {"sums": losses["sums"], "counts": losses["counts"]}
    if not tokens:
        found["general_note"] = EMPTY_NOTE
    return found


def scored_examples(records: Sequence[dict[str, Any]]) -> list[tuple[list[int], list[int]]]:
    """(input_ids, labels) of each record: its prompt then its answer, the loss on the answer's tokens only.

    Raises:
        InputError: a record without prompt_ids and answer_ids.
    """
    from deltarank.errors import InputError

    examples = []
    for record in records:
        prompt, answer = record.get("prompt_ids"), record.get("answer_ids")
        if not isinstance(prompt, list) or not isinstance(answer, list):
            raise InputError(GENERAL_TEXT, "a record has no prompt_ids and answer_ids: sample the set again")
        examples.append((prompt + answer, [IGNORE_INDEX] * len(prompt) + answer))
    return examples
