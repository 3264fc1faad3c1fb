"""What `deltarank evaluate --measure M` computes on the loaded model(s): one function per measurement, each
calling the same function a study calls (`deltarank.study.measure.run_measures`), with the study's defaults
(`deltarank.evaluation.defaults`) where the request leaves a size open.

- loss: mean loss per trained token of a data spec (`deltarank.evaluation.loss.held_out_loss`);
- accuracy: exact match of greedy answers on a closed-answer set (`deltarank.evaluation.accuracy`);
- humaneval: greedy completions, checked in the sandbox only when asked (`deltarank.evaluation.tasks`);
- drift: the loss of the base model's own samples (T = 1, untruncated) to general prompts, drawn afresh with the
  request's seed (`deltarank.evaluation.drift`): for the base alone, or for a tuned model with its rise over the
  base, the Monte Carlo estimate of the mean per-token KL(base ‖ tuned);
- diversity: k samples per prompt, counted (`deltarank.evaluation.diversity`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deltarank.evaluation import defaults

if TYPE_CHECKING:
    from deltarank.evaluation.models import EvalModels
    from deltarank.evaluation.request import EvalRequest
    from deltarank.evaluation.sandbox import Limits

Hook = Callable[[int, int], None]
DEFAULT_LIMITS = {"accuracy": 200, "loss": 64, "diversity": defaults.DIVERSITY_PROMPTS}  # examples, sequences
DEFAULT_NEW_TOKENS = {"humaneval": 384, "diversity": defaults.DIVERSITY_NEW_TOKENS}  # accuracy: per set


def limit_of(measure: str, request: EvalRequest) -> int:
    """The examples (sequences, prompts) the request measures: its `limit`, or the measure's default."""
    from deltarank.train import builtin_humaneval

    if request.limit is not None:
        return request.limit
    return builtin_humaneval.PROBLEM_COUNT if measure == "humaneval" else DEFAULT_LIMITS[measure]


def one_model(
    measure: str, request: EvalRequest, model: Any, tokenizer: Any, limits: Limits | None, progress: Hook
) -> dict[str, Any]:
    """A measurement of one loaded model: loss, accuracy, humaneval or diversity."""
    limit = limit_of(measure, request)
    data = str(request.data)
    if measure == "accuracy":
        from deltarank.evaluation.accuracy import accuracy

        return accuracy(model, tokenizer, data, limit, request.max_new_tokens, progress)
    if measure == "humaneval":
        from deltarank.evaluation.tasks import humaneval
        from deltarank.train import builtin_humaneval

        tokens = request.max_new_tokens or DEFAULT_NEW_TOKENS["humaneval"]
        problems = builtin_humaneval.problems()[:limit]
        return humaneval(model, tokenizer, problems, tokens, limits, progress)
    if measure == "diversity":
        return diversity(request, model, tokenizer, limits, progress)
    from deltarank.evaluation.loss import held_out_loss

    return held_out_loss(model, tokenizer, data, request.seq_len, limit, progress)


def diversity(
    request: EvalRequest, model: Any, tokenizer: Any, limits: Limits | None, progress: Hook
) -> dict[str, Any]:
    """k samples of each of the first N prompts of `data`, counted as a study counts them; the samples go to
    `generations.jsonl` beside the result file when there is one."""
    from deltarank.evaluation.diversity import measure_diversity
    from deltarank.evaluation.prompts import prompts_for

    path = generations_path(request)
    found = measure_diversity(
        model,
        tokenizer,
        prompts_for(str(request.data), limit_of("diversity", request)),
        samples=request.diversity_samples or defaults.DIVERSITY_SAMPLES,
        temperature=request.temperature or defaults.TEMPERATURE,
        top_p=request.top_p or defaults.TOP_P,
        max_new_tokens=request.max_new_tokens or DEFAULT_NEW_TOKENS["diversity"],
        seed=seed_of(request),
        execute=request.execute,
        generations_path=path,
        limits=limits,
        progress=progress,
    )
    return {
        "metric": "distinct_per_prompt",
        **found,
        "seed": seed_of(request),
        "prompt_set": request.data,
        "generations": None if path is None else str(path),
    }


def drift(request: EvalRequest, models: EvalModels, tuned: Path | None, tokenizer: Any) -> dict[str, Any]:
    """The base model's samples to the general prompts (T = 1, untruncated, the request's seed) and the loss of
    the base on them; with `tuned`, the tuned model's loss on the same samples and its rise over the base's: the
    estimate of KL(base ‖ tuned) per token, with its paired-bootstrap interval."""
    from deltarank.evaluation import drift as general
    from deltarank.io.progress import Progress

    answer_tokens = request.general_tokens or defaults.GENERAL_TOKENS
    samples = request.general_samples or defaults.GENERAL_SAMPLES
    with Progress("evaluate (the base model's general answers)", unit="prompt") as progress:
        records = general.general_text(
            models.base(), tokenizer, answer_tokens, seed_of(request), samples, progress.update
        )
    base = models.evaluate(None, lambda model: general.drift_loss(model, tokenizer, records))
    if tuned is None:
        return base
    own = models.evaluate(tuned, lambda model: general.drift_loss(model, tokenizer, records))
    rise = None
    if own["general_loss"] is not None and base["general_loss"] is not None:
        rise = own["general_loss"] - base["general_loss"]
    result = {**own, "base_general_loss": base["general_loss"], "general_loss_rise": rise}
    if "per_sequence" in own and "per_sequence" in base:  # as the study: evaluation noise of the rise
        from deltarank.evaluation.paired import paired_difference

        interval = paired_difference(own["per_sequence"], base["per_sequence"])
        if interval is not None:
            result["general_loss_rise_ci95"] = [interval["ci95_low"], interval["ci95_high"]]
    return result


def generations_path(request: EvalRequest) -> Path | None:
    """Where diversity's samples go: generations.jsonl in the result file's folder, or None without `output`."""
    from deltarank.evaluation.diversity import GENERATIONS_FILE

    return None if request.output is None else Path(request.output).parent / GENERATIONS_FILE


def seed_of(request: EvalRequest) -> int:
    """The seed of the sampled measurements: the request's, or the study's default."""
    return defaults.SEED if request.seed is None else request.seed
