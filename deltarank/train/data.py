"""Training data: a JSONL file or a built-in set, turned into token sequences and batches (padded or flat).

A JSONL file holds one record per line, all of one shape (see `deltarank.train.formats`); a malformed line is
an error naming the file and line. Built-in sets (`builtin:code`, `builtin:math`, ... see
`deltarank.train.builtin_data`) are produced lazily and only up to the sequences a run needs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from deltarank.errors import InputError
from deltarank.io.jsonl import iter_jsonl
from deltarank.train import builtin_data
from deltarank.train.formats import IGNORE_INDEX, Encoder, RecordError, detect_format, pack_texts

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DataSummary:
    """What a data spec turned into (recorded in run.json)."""

    spec: str
    format: str
    records: int
    sequences: int
    tokens: int
    trained_tokens: int
    dropped: int

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


class TokenizedDataset(torch.utils.data.Dataset):
    """Sequences of token ids with their labels (`IGNORE_INDEX` where no loss is taken)."""

    def __init__(self, examples: list[tuple[list[int], list[int]]]) -> None:
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict[str, list[int]]:
        ids, labels = self.examples[index]
        return {"input_ids": ids, "labels": labels}


@dataclass(frozen=True)
class PaddingCollator:
    """Right-pads a batch to its longest sequence; padding gets attention 0 and label `IGNORE_INDEX`."""

    pad_token_id: int
    name: ClassVar[str] = "padded"
    tokens_seen: ClassVar[str] = "non_padding"  # how Trainer counts tokens: the attention mask's ones

    def __call__(self, features: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        width = max(len(f["input_ids"]) for f in features)
        ids = torch.full((len(features), width), self.pad_token_id, dtype=torch.long)  # (B, T)
        labels = torch.full((len(features), width), IGNORE_INDEX, dtype=torch.long)  # (B, T)
        mask = torch.zeros((len(features), width), dtype=torch.long)  # (B, T)
        for row, feature in enumerate(features):
            n = len(feature["input_ids"])
            ids[row, :n] = torch.tensor(feature["input_ids"])
            labels[row, :n] = torch.tensor(feature["labels"])
            mask[row, :n] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


@dataclass(frozen=True)
class FlatCollator:
    """Concatenates a batch into one row of real tokens, with position ids restarting at 0 for each sequence.

    The padding-free batch of `transformers.DataCollatorWithFlattening`: no padding and no attention mask, so
    the model's mask builder reads the sequence boundaries from the position ids and makes each sequence attend
    only to itself (`deltarank.train.batching.keeps_sequences_apart` checks that a model does). The first label
    of every sequence is `IGNORE_INDEX`: a causal LM's loss shifts labels by one, so it would otherwise train
    the last token of one sequence to predict the first of the next; it is never a target in a padded batch
    either, so both batchings train on the same tokens with the same loss. `use_cache=False` keeps the model
    from creating a KV cache, in whose presence the boundaries are not read.

    Args:
        trained_logits_only: Project only the positions whose next token is trained onto the vocabulary
            (`logits_to_keep`, with their targets as `shift_labels`): the LM head and the cross-entropy skip
            the prompt, about half the tokens of instruction data; the loss is the same.
    """

    trained_logits_only: bool = True
    name: ClassVar[str] = "padding-free"
    tokens_seen: ClassVar[str] = "all"  # every token of a flattened batch is a real one

    def __call__(self, features: list[dict[str, list[int]]]) -> dict[str, Any]:
        ids: list[int] = []
        labels: list[int] = []
        positions: list[int] = []
        for feature in features:
            n = len(feature["input_ids"])
            ids.extend(feature["input_ids"])
            labels.append(IGNORE_INDEX)
            labels.extend(feature["labels"][1:n])
            positions.extend(range(n))
        batch: dict[str, Any] = {
            "input_ids": torch.tensor([ids], dtype=torch.long),  # (1, ΣT)
            "labels": torch.tensor([labels], dtype=torch.long),  # (1, ΣT)
            "position_ids": torch.tensor([positions], dtype=torch.long),  # (1, ΣT)
            "use_cache": False,
        }
        if self.trained_logits_only:
            targets = [*labels[1:], IGNORE_INDEX]  # position t predicts token t + 1
            keep = [t for t, target in enumerate(targets) if target != IGNORE_INDEX]
            batch["logits_to_keep"] = torch.tensor(keep, dtype=torch.long)  # (K,)
            batch["shift_labels"] = torch.tensor([[targets[t] for t in keep]], dtype=torch.long)  # (1, K)
        return batch


def read_jsonl(path: str | Path) -> tuple[str, list[dict[str, Any]]]:
    """Read and check every line of a JSONL file; all records must share one shape.

    Returns:
        The shape name and the records.

    Raises:
        InputError: missing or unreadable file, a line not UTF-8, not JSON or of an unknown or inconsistent shape
            (naming the line), no records.
    """
    file = Path(path)
    if not file.is_file():
        raise InputError(file, "data file not found (or give builtin:code, builtin:math, ...)")
    fmt: str | None = None
    records: list[dict[str, Any]] = []
    for number, record in iter_jsonl(file, "the data file"):
        try:
            shape = detect_format(record)
        except RecordError as exc:
            raise InputError(file, f"line {number}: {exc}") from None
        if fmt is not None and shape != fmt:
            raise InputError(file, f"line {number}: a {shape} record in a file of {fmt} records")
        fmt = shape
        records.append(record)
    if fmt is None:
        raise InputError(file, "no records")
    return fmt, records


def load_records(spec: str) -> tuple[str, Iterable[dict[str, Any]]]:
    """(shape, records) of a JSONL path or a built-in name; built-in records are a lazy iterator."""
    if builtin_data.is_builtin(spec):
        parsed = builtin_data.parse_builtin(spec)
        return parsed.format, builtin_data.builtin_records(parsed)
    return read_jsonl(spec)


def build_dataset(
    spec: str, tokenizer: Any, seq_len: int, max_sequences: int | None = None
) -> tuple[TokenizedDataset, DataSummary]:
    """Tokenize a data spec into a dataset of at most `seq_len`-token sequences.

    Args:
        spec: A JSONL path or a built-in name.
        tokenizer: The model's tokenizer.
        seq_len: Maximum sequence length (the packing length for text).
        max_sequences: Stop once this many sequences exist (built-in sets only; files are read whole).

    Raises:
        InputError: unreadable data, or no sequence with a trained token.
    """
    fmt, records = load_records(spec)
    cap = max_sequences if builtin_data.is_builtin(spec) else None
    counter = _Counter(records)
    if fmt == "text":
        blocks = pack_texts(tokenizer, (r["text"] for r in counter), seq_len, cap)
        examples = [(block, list(block)) for block in blocks]
        dropped = 0
    else:
        examples, dropped = _encode_all(Encoder(tokenizer, seq_len), counter, fmt, cap)
    if not examples:
        raise InputError(
            spec,
            f"no record keeps a trained token within seq_len {seq_len}; raise --seq-len or check the data",
        )
    if dropped:
        logger.warning(
            "%s: dropped %d records with no trained token within seq_len %d", spec, dropped, seq_len
        )
    summary = DataSummary(
        spec=spec,
        format=fmt,
        records=counter.count,
        sequences=len(examples),
        tokens=sum(len(ids) for ids, _ in examples),
        trained_tokens=sum(sum(1 for x in labels if x != IGNORE_INDEX) for _, labels in examples),
        dropped=dropped,
    )
    return TokenizedDataset(examples), summary


def _encode_all(
    encoder: Encoder, records: Iterable[dict[str, Any]], fmt: str, cap: int | None
) -> tuple[list[tuple[list[int], list[int]]], int]:
    """Encode records until `cap` sequences exist; count those left without any trained token."""
    examples = []
    dropped = 0
    for record in records:
        ids, labels = encoder.encode(record, fmt)
        if all(x == IGNORE_INDEX for x in labels[1:]):
            dropped += 1
            continue
        examples.append((ids, labels))
        if cap is not None and len(examples) >= cap:
            break
    return examples, dropped


class _Counter:
    """Iterates over records and counts how many were consumed."""

    def __init__(self, records: Iterable[dict[str, Any]]) -> None:
        self.records = records
        self.count = 0

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for record in self.records:
            self.count += 1
            yield record
