"""The measurements `deltarank evaluate` makes on one model, one per kind of held-out data.

- accuracy: exact-match accuracy of greedy answers (`builtin:zh-sentiment:test`: 正面 / 负面);
- humaneval: greedy completions of the HumanEval prompts, cut at the next top-level statement, and, only when
  asked, each checked against the problem's tests (`deltarank.evaluation.verdict`: the test in a trusted
  process, the completion in the bubblewrap sandbox of `deltarank.evaluation.sandbox`);
  pass@1 of greedy decoding;
- loss: token-weighted mean loss on any data spec (a JSONL file, `builtin:zh-text:test`, ...), tokenized as
  training tokenizes it (forgetting = its rise from the base model to the tuned one).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from deltarank.evaluation import sandbox, verdict
from deltarank.evaluation.generate import greedy_answer
from deltarank.evaluation.sandbox import Limits
from deltarank.train import builtin_humaneval, builtin_zh

logger = logging.getLogger(__name__)
SHOWN_ANSWERS = 5  # most frequent normalized answers kept in the result
Hook = Callable[[int, int], None]  # progress: (done, total), e.g. `deltarank.io.progress.Progress.update`


def _no_progress(done: int, total: int) -> None:
    """The default progress hook: say nothing."""


def sentiment_accuracy(
    model: Any,
    tokenizer: Any,
    records: Sequence[dict[str, Any]],
    max_new_tokens: int,
    progress: Hook = _no_progress,
) -> dict[str, Any]:
    """Exact-match accuracy of the greedy answers to zh-sentiment records (`prompt` turns, `answer`);
    `progress(answered, total)` after each answer."""
    correct = 0
    answers: Counter[str] = Counter()
    for i, record in enumerate(records, start=1):
        generated = greedy_answer(model, tokenizer, record["prompt"], max_new_tokens)
        answers[builtin_zh.normalize_answer(generated)] += 1
        correct += builtin_zh.sentiment_is_correct(generated, record["answer"])
        progress(i, len(records))
    return {
        "metric": "exact_match_accuracy",
        "examples": len(records),
        "correct": correct,
        "accuracy": correct / max(len(records), 1),
        "frequent_answers": dict(answers.most_common(SHOWN_ANSWERS)),
    }


def humaneval(
    model: Any,
    tokenizer: Any,
    problems: Sequence[builtin_humaneval.Problem],
    max_new_tokens: int,
    limits: Limits | None,
    progress: Hook = _no_progress,
) -> dict[str, Any]:
    """Greedy completions of HumanEval prompts; run against their tests only when `limits` is given;
    `progress(generated, total)` after each completion."""
    completions = []
    for i, problem in enumerate(problems, start=1):
        generated = greedy_answer(model, tokenizer, problem.prompt, max_new_tokens)
        completions.append(builtin_humaneval.truncate_completion(generated))
        progress(i, len(problems))
    rows = [{"task_id": p.task_id, "completion": c} for p, c in zip(problems, completions, strict=True)]
    result: dict[str, Any] = {"metric": "pass@1", "examples": len(rows), "executed": limits is not None}
    if limits is not None:
        for row, outcome in zip(rows, check_completions(problems, completions, limits), strict=True):
            row.update(outcome)
        passed = sum(bool(row["passed"]) for row in rows)
        result.update(passed=passed, pass_at_1=passed / max(len(rows), 1))
        result.update(isolation=sandbox.isolation(limits), limits=limits.record())
    result["problems"] = rows
    return result


def check_completions(
    problems: Sequence[builtin_humaneval.Problem], completions: Sequence[str], limits: Limits
) -> list[dict[str, Any]]:
    """Check each completion against its problem's tests: the test in a trusted process, the completion in the
    sandbox (`deltarank.evaluation.verdict`). Each outcome records the isolation mode.

    Raises:
        DeltarankError: no sandbox here and `limits.unsafe_no_sandbox` is not set (before anything runs).
    """
    mode = sandbox.isolation(limits)
    sandbox.warn_if_unsafe(mode)
    return [verdict.check(p, c, limits, mode).to_dict() for p, c in zip(problems, completions, strict=True)]


def held_out_loss(
    model: Any, tokenizer: Any, data: str, seq_len: int, limit: int, progress: Hook = _no_progress
) -> dict[str, Any]:
    """Mean loss per trained token over the first `limit` sequences of a data spec, tokenized as in training;
    `progress(sequences, total)` after each batch."""
    from deltarank.reproduce.evaluate import sequence_loss
    from deltarank.train.data import build_dataset
    from deltarank.train.formats import IGNORE_INDEX

    dataset, summary = build_dataset(data, tokenizer, seq_len, max_sequences=limit)
    examples = dataset.examples[:limit]
    return {
        "metric": "loss",
        "format": summary.format,
        "examples": len(examples),
        "trained_tokens": sum(sum(x != IGNORE_INDEX for x in labels[1:]) for _, labels in examples),
        "loss": sequence_loss(model, examples, tokenizer.pad_token_id, progress),
    }
