"""Exact-match accuracy of greedy answers on the built-in sets with closed answers.

- `builtin:zh-sentiment[:test]`: the answer word (正面 / 负面) of each review's chat prompt, normalized;
- `builtin:math[:test]`: the final number of a short worked solution to each held-out problem (the test split,
  `deltarank.train.builtin_data.held_out_examples`), as `deltarank.train.builtin_math.is_correct` extracts it.

`deltarank evaluate`, a study's `learning` and the reproduction's math accuracy all measure it here.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import torch

from deltarank.evaluation.generate import greedy_answer

SHOWN_ANSWERS = 5  # most frequent normalized answers kept in the result
CLOSED_ANSWER_SETS = ("zh-sentiment", "math")
NEW_TOKENS = {"zh-sentiment": 8, "math": 160}  # an answer word; a short worked solution
Hook = Callable[[int, int], None]  # progress: (done, total), e.g. `deltarank.io.progress.Progress.update`


def closed_answer_set(name: str) -> str | None:
    """The closed-answer data set a spec names (`zh-sentiment`, `math`), or None for any other spec."""
    from deltarank.train.builtin_data import is_builtin, parse_builtin

    if not is_builtin(name):
        return None
    dataset = parse_builtin(name).dataset
    return dataset if dataset in CLOSED_ANSWER_SETS else None


def accuracy(
    model: Any,
    tokenizer: Any,
    name: str,
    examples: int,
    max_new_tokens: int | None = None,
    progress: Hook | None = None,
) -> dict[str, Any]:
    """Exact-match accuracy of greedy answers on the first `examples` of a closed-answer set.

    Args:
        model: The loaded model (eval mode).
        tokenizer: Its tokenizer.
        name: `builtin:zh-sentiment[:test]` or `builtin:math[:test]`.
        examples: How many examples to answer.
        max_new_tokens: Tokens per answer (None: NEW_TOKENS of the set).
        progress: `progress(answered, total)` after each answer.

    Returns:
        metric, examples, correct, accuracy (and, for zh-sentiment, the most frequent answers).

    Raises:
        DeltarankError: `name` is not a closed-answer set.
    """
    from deltarank.errors import DeltarankError
    from deltarank.train.builtin_data import builtin_records, held_out_examples, parse_builtin

    dataset = closed_answer_set(name)
    if dataset is None:
        raise DeltarankError(
            f"{name}: no closed answers (accuracy needs builtin:zh-sentiment or builtin:math)"
        )
    tokens = max_new_tokens or NEW_TOKENS[dataset]
    if dataset == "math":
        return math_accuracy(model, tokenizer, held_out_examples("math", examples), tokens, progress)
    records = list(itertools.islice(builtin_records(parse_builtin(name)), examples))
    return sentiment_accuracy(model, tokenizer, records, tokens, progress)


def sentiment_accuracy(
    model: Any,
    tokenizer: Any,
    records: Sequence[dict[str, Any]],
    max_new_tokens: int,
    progress: Hook | None = None,
) -> dict[str, Any]:
    """Exact-match accuracy of the greedy answers to zh-sentiment records (`prompt` turns, `answer`);
    `progress(answered, total)` after each answer."""
    from deltarank.train import builtin_zh

    correct = 0
    answers: Counter[str] = Counter()
    for i, record in enumerate(records, start=1):
        generated = greedy_answer(model, tokenizer, record["prompt"], max_new_tokens)
        answers[builtin_zh.normalize_answer(generated)] += 1
        correct += builtin_zh.sentiment_is_correct(generated, record["answer"])
        if progress is not None:
            progress(i, len(records))
    return {
        "metric": "exact_match_accuracy",
        "examples": len(records),
        "correct": correct,
        "accuracy": correct / max(len(records), 1),
        "frequent_answers": dict(answers.most_common(SHOWN_ANSWERS)),
    }


@torch.no_grad()
def math_accuracy(
    model: Any, tokenizer: Any, examples: Sequence[Any], max_new_tokens: int, progress: Hook | None = None
) -> dict[str, Any]:
    """Exact-match accuracy of the greedy completions of held-out math problems (`prompt`, `answer`): the
    share whose extracted final number is the answer; `progress(answered, total)` after each answer."""
    from deltarank.train.builtin_math import is_correct

    correct = 0
    for i, example in enumerate(examples, start=1):
        correct += int(
            is_correct(greedy_answer(model, tokenizer, example.prompt, max_new_tokens), example.answer)
        )
        if progress is not None:
            progress(i, len(examples))
    return {
        "metric": "exact_match_accuracy",
        "examples": len(examples),
        "correct": correct,
        "accuracy": correct / max(len(examples), 1),
    }
