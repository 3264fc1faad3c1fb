"""Learning and forgetting measurements for the reproduction.

- Learning: mean per-token loss on the held-out split of the target domain (tokenized exactly as training
  tokenizes it), and for math the exact-match accuracy of greedy answers.
- Forgetting: the increase of per-token loss on text the base model itself writes in answer to general
  prompts (history, cooking, travel, ...). It is available offline on every machine, never seen in training,
  and measures how far the tuned model has drifted from the base model's own general behaviour.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from deltarank.train.formats import DEFAULT_CHAT_TEMPLATE, IGNORE_INDEX, Encoder

log = logging.getLogger(__name__)

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
EVAL_BATCH = 8


class EvalModels:
    """Loads the models to evaluate, reading (and dequantizing) the base model only once.

    A peft adapter of an unquantized base is attached to the kept base model for its evaluation and detached
    afterwards (`unload`, no merge), so the base weights stay untouched; any other `deltarank train` output
    (a full fine-tune, a bottleneck adapter, a QLoRA adapter on its re-quantized base) is loaded on its own
    (`deltarank.train.models.load_trained`).
    """

    def __init__(self, base: Any, device: str = "cpu") -> None:
        """`base`: the base model's `ModelSource`; `device`: where the models run (auto, cpu, cuda, cuda:N)."""
        from deltarank.analysis.engine.compute import resolve_device

        self.source = base
        self.device = resolve_device(device)
        self._base: Any = None

    def base(self) -> Any:
        """The base model in fp32 eval mode."""
        if self._base is None:
            from deltarank.train.models import load_model

            self._base = ready_for_evaluation(load_model(self.source), self.device)
        return self._base

    def evaluate(self, tuned: Path | None, fn: Any) -> Any:
        """fn(model) for the base (`tuned` None) or a `deltarank train` output (or checkpoint) `tuned`."""
        from deltarank.io.adapter import is_adapter_dir
        from deltarank.io.quantization import read_quantization
        from deltarank.train.models import load_trained

        if tuned is None:
            return fn(self.base())
        if is_adapter_dir(tuned) and read_quantization(tuned) is None:
            wrapped = ready_for_evaluation(load_trained(self.source, tuned, base=self.base()), self.device)
            try:
                return fn(wrapped)
            finally:
                self._base = wrapped.unload()
        return fn(ready_for_evaluation(load_trained(self.source, tuned), self.device))


def ready_for_evaluation(model: Any, device: torch.device) -> Any:
    """`model` on `device`, in eval mode, with the KV cache on (training turns it off; generation needs it)."""
    model.to(device)
    model.eval()
    model.config.use_cache = True
    return model


def model_device(model: Any) -> torch.device:
    """The device a model's weights are on: where its inputs go (the CPU for a model without parameters)."""
    return next((p.device for p in model.parameters()), torch.device("cpu"))


@torch.no_grad()
def sequence_loss(
    model: Any,
    examples: Sequence[tuple[list[int], list[int]]],
    pad_id: int,
    progress: Callable[[int, int], None] | None = None,
) -> float:
    """Token-weighted mean cross-entropy over trained positions of (input_ids, labels) examples;
    `progress(examples done, total)` after each batch when given."""
    total, count = 0.0, 0
    device = model_device(model)
    for start in range(0, len(examples), EVAL_BATCH):
        chunk = examples[start : start + EVAL_BATCH]
        width = max(len(ids) for ids, _ in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        labels = torch.full((len(chunk), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, (seq, lab) in enumerate(chunk):
            ids[row, : len(seq)], labels[row, : len(lab)], mask[row, : len(seq)] = (
                torch.tensor(seq),
                torch.tensor(lab),
                1,
            )
        # prompt and P-tuning adapters put their virtual tokens' logits first: keep the last T positions
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits[:, -width:][:, :-1]
        target = labels[:, 1:].to(device)  # logits: (B, T-1, V), target: (B, T-1)
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).float(),
            target.reshape(-1),
            ignore_index=IGNORE_INDEX,
            reduction="sum",
        )
        total += float(loss)
        count += int((target != IGNORE_INDEX).sum())
        if progress is not None:
            progress(start + len(chunk), len(examples))
    return total / max(count, 1)


@torch.no_grad()
def general_text(model: Any, tokenizer: Any, max_new_tokens: int, seed: int) -> list[dict[str, Any]]:
    """The base model's own answers to GENERAL_PROMPTS (sampled, fixed seed), as chat records."""
    torch.manual_seed(seed)
    records = []
    for prompt in GENERAL_PROMPTS:
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
    return records


def encode_chats(
    tokenizer: Any, records: Sequence[dict[str, Any]], seq_len: int
) -> list[tuple[list[int], list[int]]]:
    """Tokenize chat records the way training does (loss on the assistant turn only)."""
    encoder = Encoder(tokenizer, seq_len)
    return [encoder.encode(record, "messages") for record in records]


@torch.no_grad()
def math_accuracy(model: Any, tokenizer: Any, examples: Sequence[Any], max_new_tokens: int) -> float:
    """Share of held-out math problems whose greedy completion has the exact answer."""
    from deltarank.train.builtin_math import is_correct

    correct = 0
    for example in examples:
        inputs = tokenizer(example.prompt, return_tensors="pt").to(model_device(model))
        out = model.generate(
            **inputs,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.eos_token_id,
            use_cache=True,
        )
        text = tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        correct += int(is_correct(text, example.answer))
    return correct / max(len(examples), 1)
