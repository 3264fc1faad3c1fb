"""Data formats: every record shape becomes ids with the right loss mask; bad lines name file and line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from deltarank.errors import DeltarankError, InputError
from deltarank.train.data import PaddingCollator, build_dataset, read_jsonl
from deltarank.train.formats import IGNORE_INDEX, Encoder, pack_texts
from tests.train.conftest import train_tokenizer, write_jsonl


@pytest.fixture(scope="module")
def tokenizer():  # type: ignore[no-untyped-def]
    return train_tokenizer()


def trained_text(tokenizer, ids: list[int], labels: list[int]) -> str:  # type: ignore[no-untyped-def]
    return tokenizer.decode([i for i, label in zip(ids, labels, strict=True) if label != IGNORE_INDEX])


def test_prompt_completion_trains_only_the_completion(tokenizer) -> None:  # type: ignore[no-untyped-def]
    ids, labels = Encoder(tokenizer, 64).encode(
        {"prompt": "What is 2 + 2?", "completion": " 4"}, "prompt_completion"
    )
    prompt_len = len(tokenizer("What is 2 + 2?")["input_ids"])
    assert ids[0] == tokenizer.bos_token_id  # the tokenizer's own prefix on the prompt
    assert labels[:prompt_len] == [IGNORE_INDEX] * prompt_len
    assert trained_text(tokenizer, ids, labels) == " 4</s>"  # completion + EOS
    assert ids[-1] == tokenizer.eos_token_id


def test_messages_default_template_trains_assistant_turns(tokenizer) -> None:  # type: ignore[no-untyped-def]
    assert tokenizer.chat_template is None  # so deltarank's documented ChatML default applies
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Say hi"},
        {"role": "assistant", "content": "hi"},
        {"role": "user", "content": "Again"},
        {"role": "assistant", "content": "hello"},
    ]
    ids, labels = Encoder(tokenizer, 256).encode({"messages": messages}, "messages")
    assert tokenizer.decode(ids).startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user")
    assert trained_text(tokenizer, ids, labels) == "hi<|im_end|>\nhello<|im_end|>\n"


def test_alpaca_joins_instruction_and_input(tokenizer) -> None:  # type: ignore[no-untyped-def]
    record = {"instruction": "Add", "input": "2 and 3", "output": "5"}
    ids, labels = Encoder(tokenizer, 256).encode(record, "alpaca")
    assert "<|im_start|>user\nAdd\n2 and 3<|im_end|>" in tokenizer.decode(ids)
    assert trained_text(tokenizer, ids, labels) == "5<|im_end|>\n"


def test_conversational_prompt_completion_trains_only_completion(tokenizer) -> None:  # type: ignore[no-untyped-def]
    record = {
        "prompt": [
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": "b"},
            {"role": "user", "content": "c"},
        ],
        "completion": [{"role": "assistant", "content": "d"}],
    }
    ids, labels = Encoder(tokenizer, 256).encode(record, "prompt_completion")
    assert trained_text(tokenizer, ids, labels) == "d<|im_end|>\n"


def test_text_is_packed_into_full_blocks(tokenizer) -> None:  # type: ignore[no-untyped-def]
    texts = ["def add(a, b):\n    return a + b\n"] * 10
    per_doc = len(tokenizer(texts[0])["input_ids"]) + 1  # + EOS separator
    blocks = pack_texts(tokenizer, texts, seq_len=16)
    assert len(blocks) == (10 * per_doc) // 16
    assert all(len(b) == 16 for b in blocks)
    assert pack_texts(tokenizer, texts, seq_len=16, max_blocks=2) == blocks[:2]


def test_collator_pads_with_ignored_labels() -> None:
    batch = PaddingCollator(pad_token_id=2)(
        [{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [8], "labels": [8]}]
    )
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 2, 2]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]
    assert batch["input_ids"].dtype == torch.long


def test_every_jsonl_shape_is_detected(tmp_path: Path) -> None:
    shapes = {
        "messages": {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
        "prompt_completion": {"prompt": "q", "completion": "a", "id": 7},
        "alpaca": {"instruction": "q", "input": "", "output": "a"},
        "text": {"text": "plain"},
    }
    for name, record in shapes.items():
        fmt, records = read_jsonl(write_jsonl(tmp_path / f"{name}.jsonl", [record, record]))
        assert (fmt, len(records)) == (name, 2)


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ('{"text": "a"}\n{"text": "b"\n', r"line 2: invalid JSON"),
        (
            '{"text": "a"}\n\n{"prompt": "p", "completion": "c"}\n',
            r"line 3: a prompt_completion record in a file of text",
        ),
        ('{"messages": [{"role": "robot", "content": "x"}]}\n', r"line 1: 'messages'\[0\] has role 'robot'"),
        ('{"question": "q"}\n', r"line 1: no known shape \(keys: question\)"),
        ("[1, 2]\n", r"line 1: expected a JSON object"),
        ("\n", r"no records"),
    ],
)
def test_malformed_lines_name_file_and_line(tmp_path: Path, lines: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(lines)
    with pytest.raises(InputError, match=message) as info:
        read_jsonl(path)
    assert str(path) in str(info.value)


def test_build_dataset_drops_records_without_trained_tokens(tmp_path: Path, tokenizer) -> None:  # type: ignore[no-untyped-def]
    records = [{"prompt": "x " * 40, "completion": " y"}, {"prompt": "q", "completion": " a"}]
    dataset, summary = build_dataset(str(write_jsonl(tmp_path / "d.jsonl", records)), tokenizer, seq_len=16)
    assert (len(dataset), summary.dropped, summary.records) == (1, 1, 2)
    assert summary.trained_tokens == 2  # " a" and EOS


def test_builtin_data_stops_at_the_sequences_needed(tokenizer) -> None:  # type: ignore[no-untyped-def]
    dataset, summary = build_dataset("builtin:math", tokenizer, seq_len=128, max_sequences=12)
    assert len(dataset) == 12 and summary.format == "prompt_completion"
    packed, packed_summary = build_dataset("builtin:code-raw", tokenizer, seq_len=32, max_sequences=5)
    assert len(packed) == 5 and all(len(ids) == 32 for ids, _ in packed.examples)
    assert packed_summary.trained_tokens == 5 * 32


def test_unknown_builtin_suggests(tokenizer) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(DeltarankError, match="did you mean 'builtin:math'"):
        build_dataset("builtin:maths", tokenizer, seq_len=16)
