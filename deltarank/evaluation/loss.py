"""Held-out loss: token-weighted mean cross-entropy over the trained positions of examples tokenized exactly
as training tokenizes them (loss on the answer only where the format has one)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from deltarank.evaluation.models import model_device
from deltarank.train.formats import IGNORE_INDEX, Encoder

EVAL_BATCH = 8
Hook = Callable[[int, int], None]  # progress: (done, total), e.g. `deltarank.io.progress.Progress.update`


@torch.no_grad()
def sequence_loss(
    model: Any,
    examples: Sequence[tuple[list[int], list[int]]],
    pad_id: int,
    progress: Hook | None = None,
) -> float:
    """Token-weighted mean cross-entropy over trained positions of (input_ids, labels) examples;
    `progress(examples done, total)` after each batch when given."""
    return sequence_losses(model, examples, pad_id, progress)["loss"]


@torch.no_grad()
def sequence_losses(
    model: Any,
    examples: Sequence[tuple[list[int], list[int]]],
    pad_id: int,
    progress: Hook | None = None,
) -> dict[str, Any]:
    """`sequence_loss` with each example's part: `loss` (the token-weighted mean), `sums` (summed
    cross-entropy of each example's trained positions) and `counts` (its trained positions). Two models
    measured on the same examples pair up example by example (`deltarank.study.claims.statistics`'s paired
    bootstrap)."""
    total, count = 0.0, 0
    sums: list[float] = []
    counts: list[int] = []
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
        per_token = torch.nn.functional.cross_entropy(
            logits.transpose(1, 2).float(), target, ignore_index=IGNORE_INDEX, reduction="none"
        )  # (B, T-1); 0 at ignored positions
        sums += [float(v) for v in per_token.sum(dim=1)]
        counts += [int(v) for v in (target != IGNORE_INDEX).sum(dim=1)]
        if progress is not None:
            progress(start + len(chunk), len(examples))
    return {"loss": total / max(count, 1), "sums": sums, "counts": counts}


def trained_tokens(examples: Sequence[tuple[list[int], list[int]]]) -> int:
    """The positions a loss is taken over: labelled tokens after the first of each example."""
    return sum(sum(x != IGNORE_INDEX for x in labels[1:]) for _, labels in examples)


def encode_chats(
    tokenizer: Any, records: Sequence[dict[str, Any]], seq_len: int
) -> list[tuple[list[int], list[int]]]:
    """Tokenize chat records the way training does (loss on the assistant turn only)."""
    encoder = Encoder(tokenizer, seq_len)
    return [encoder.encode(record, "messages") for record in records]


def held_out_loss(
    model: Any, tokenizer: Any, data: str, seq_len: int, limit: int, progress: Hook | None = None
) -> dict[str, Any]:
    """Mean loss per trained token over the first `limit` sequences of a data spec (a JSONL file,
    `builtin:<name>:test`, ...), tokenized as in training; `progress(sequences, total)` after each batch."""
    examples, data_format = held_out_examples(tokenizer, data, seq_len, limit)
    losses = sequence_losses(model, examples, tokenizer.pad_token_id, progress)
    return {
        "metric": "loss",
        "format": data_format,
        "examples": len(examples),
        "trained_tokens": trained_tokens(examples),
        "loss": losses["loss"],
        "per_sequence": {"sums": losses["sums"], "counts": losses["counts"]},
    }


def held_out_examples(
    tokenizer: Any, data: str, seq_len: int, limit: int
) -> tuple[list[tuple[list[int], list[int]]], str]:
    """The first `limit` sequences of a data spec tokenized as training tokenizes them (what `held_out_loss`
    takes the loss over), and the data's format."""
    from deltarank.train.data import build_dataset

    dataset, summary = build_dataset(data, tokenizer, seq_len, max_sequences=limit)
    return list(dataset.examples[:limit]), summary.format
