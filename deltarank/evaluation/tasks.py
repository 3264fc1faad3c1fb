"""HumanEval: greedy completions of its prompts, cut at the next top-level statement, and, only when asked, each
checked against the problem's tests (`deltarank.evaluation.verdict`: the test in a trusted process, the
completion in the bubblewrap sandbox of `deltarank.evaluation.sandbox`); pass@1 of greedy decoding.

The other measurements live in their own modules: held-out loss in `deltarank.evaluation.loss`, accuracy in
`deltarank.evaluation.accuracy`, general-text drift in `deltarank.evaluation.drift`, diversity in
`deltarank.evaluation.diversity`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from deltarank.evaluation import sandbox, verdict
from deltarank.evaluation.generate import greedy_answer
from deltarank.evaluation.sandbox import Limits
from deltarank.train import builtin_humaneval

logger = logging.getLogger(__name__)
HUMANEVAL_NAMES = ("builtin:humaneval", "builtin:humaneval:test")
Hook = Callable[[int, int], None]  # progress: (done, total), e.g. `deltarank.io.progress.Progress.update`


def humaneval(
    model: Any,
    tokenizer: Any,
    problems: Sequence[builtin_humaneval.Problem],
    max_new_tokens: int,
    limits: Limits | None,
    progress: Hook | None = None,
) -> dict[str, Any]:
    """Greedy completions of HumanEval prompts; run against their tests only when `limits` is given;
    `progress(generated, total)` after each completion."""
    completions = []
    for i, problem in enumerate(problems, start=1):
        generated = greedy_answer(model, tokenizer, problem.prompt, max_new_tokens)
        completions.append(builtin_humaneval.truncate_completion(generated))
        if progress is not None:
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
