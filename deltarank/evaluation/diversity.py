"""Output diversity of a model: k sampled answers per prompt, counted as Biderman et al. (2024) count them.

Generation: each prompt (`deltarank.evaluation.prompts`: the first n HumanEval prompts, the `prompt` of each
line of a JSONL file, or the prompts of a held-out set) is encoded as `deltarank evaluate` encodes it (`deltarank.evaluation.generate.prompt_ids`) and sampled k times
(temperature, top-p, at most `max_new_tokens`), with the random generator seeded from (seed, prompt index):
the same seed gives the same samples. HumanEval samples are cut at the next top-level statement
(`truncate_completion`) and, when asked, run against the problem's tests in sandboxed processes.

Counting (pure functions, no model):
- `distinct_strings`: distinct output strings of one prompt (the paper's count); the report gives its mean
  over prompts, also after whitespace normalisation (runs of whitespace -> one space, ends stripped);
- `distinct_n`: distinct n-grams / total n-grams over all samples of all prompts pooled, on whitespace tokens
  (`str.split()`), n = 1, 2;
- with a checker, the distinct strings among the passing and among the failing samples of each prompt
  (0 for a prompt with none), averaged over all prompts, and the pass rate.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deltarank.analysis.results.claim_statistic import t_half_width
from deltarank.errors import InputError

if TYPE_CHECKING:
    from deltarank.evaluation.prompts import DiversityPrompt
    from deltarank.evaluation.sandbox import Limits

DISTINCT_N = (1, 2)
GENERATIONS_FILE = "generations.jsonl"


# ----------------------------------------------------------------------------------------------- counting


def normalise_whitespace(text: str) -> str:
    """Runs of whitespace become one space; leading and trailing whitespace is dropped."""
    return " ".join(text.split())


def distinct_strings(samples: Sequence[str]) -> int:
    """Number of distinct strings among one prompt's samples."""
    return len(set(samples))


def distinct_n(samples: Sequence[str], n: int) -> tuple[int, int]:
    """(distinct n-grams, total n-grams) over all samples, on whitespace tokens; n-grams never cross samples."""
    grams: list[tuple[str, ...]] = []
    for text in samples:
        tokens = text.split()
        grams.extend(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
    return len(set(grams)), len(grams)


def count_diversity(
    samples: Sequence[Sequence[str]], passed: Sequence[Sequence[bool]] | None = None
) -> dict[str, Any]:
    """The diversity counts of k samples for each of n prompts (`samples[prompt][sample]`).

    Args:
        samples: The generated texts, one list per prompt.
        passed: Whether each sample passed its tests, same shape as `samples`, or None without a checker.

    Returns:
        prompts, samples_per_prompt, distinct_per_prompt (mean over prompts of the distinct strings) with its
        95% t interval over prompts (distinct_per_prompt_ci95, clipped to a count's possible range: at least 1
        when every prompt has samples, at most samples_per_prompt; None with one prompt) and the per-prompt distinct_counts,
        distinct_per_prompt_normalised (after whitespace normalisation), distinct_1 and distinct_2 (ratios; None
        when there is no n-gram) with their counts, and with `passed`: pass_rate, distinct_passing_per_prompt,
        distinct_failing_per_prompt.
    """
    prompts = len(samples)
    flat = [text for group in samples for text in group]
    counts = [distinct_strings(g) for g in samples]
    mean = _mean(counts)
    half = t_half_width([float(c) for c in counts])
    most = max((len(g) for g in samples), default=0)
    result: dict[str, Any] = {
        "prompts": prompts,
        "samples_per_prompt": most,
        "distinct_per_prompt": mean,
        "distinct_per_prompt_ci95": (
            None
            if half is None or mean is None
            else [max(mean - half, float(min(len(g) for g in samples) > 0)), min(mean + half, most)]
        ),
        "distinct_counts": counts,
        "distinct_per_prompt_normalised": _mean(
            [distinct_strings([normalise_whitespace(t) for t in g]) for g in samples]
        ),
    }
    for n in DISTINCT_N:
        distinct, total = distinct_n(flat, n)
        result[f"distinct_{n}"] = distinct / total if total else None
        result[f"distinct_{n}_ngrams"] = distinct
        result[f"total_{n}_ngrams"] = total
    if passed is not None:
        outcomes = [ok for group in passed for ok in group]
        result["pass_rate"] = sum(outcomes) / len(outcomes) if outcomes else None
        for label, want in (("passing", True), ("failing", False)):
            result[f"distinct_{label}_per_prompt"] = _mean(
                [
                    distinct_strings([t for t, ok in zip(g, p, strict=True) if ok is want])
                    for g, p in zip(samples, passed, strict=True)
                ]
            )
    return result


def recount_generations(path: Path) -> dict[str, Any]:
    """`count_diversity` of the samples a generations.jsonl keeps (`measure_diversity` writes it): grouped by
    prompt_id in file order, with the checker's outcomes when every line has one.

    Raises:
        InputError: the file cannot be read, or a line lacks prompt_id or text.
    """
    from deltarank.io.jsonl import iter_jsonl

    texts: dict[str, list[str]] = {}
    outcomes: dict[str, list[bool | None]] = {}
    for number, record in iter_jsonl(path, "the generations file"):
        prompt_id, text = record.get("prompt_id"), record.get("text")
        if not isinstance(prompt_id, str) or not isinstance(text, str):
            raise InputError(path, f"line {number}: needs a prompt_id and a text")
        texts.setdefault(prompt_id, []).append(text)
        outcomes.setdefault(prompt_id, []).append(record.get("passed"))
    checked = all(ok is not None for group in outcomes.values() for ok in group)
    passed = [[bool(ok) for ok in outcomes[key]] for key in texts] if checked and texts else None
    return count_diversity(list(texts.values()), passed)


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


# ---------------------------------------------------------------------------------------------- generation


def sample_answers(
    model: Any,
    tokenizer: Any,
    prompt: Any,
    samples: int,
    *,
    temperature: float,
    top_p: float,
    max_new_tokens: int,
    seed: int,
) -> list[str]:
    """`samples` sampled continuations of one prompt (special tokens removed); the same seed, the same texts."""
    import torch

    from deltarank.evaluation.generate import prompt_ids
    from deltarank.evaluation.models import model_device

    ids = prompt_ids(tokenizer, prompt).to(model_device(model))
    torch.manual_seed(seed)
    with torch.no_grad():
        out = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_new_tokens,
            do_sample=True,
            temperature=temperature,
            top_p=top_p,
            num_return_sequences=samples,
            pad_token_id=tokenizer.pad_token_id,
            use_cache=True,
        )
    return [str(tokenizer.decode(row[ids.shape[1] :], skip_special_tokens=True)) for row in out]


def measure_diversity(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[DiversityPrompt],
    *,
    samples: int,
    temperature: float,
    top_p: float,
    max_new_tokens: int,
    seed: int,
    execute: bool,
    generations_path: Path | None = None,
    limits: Limits | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Sample every prompt, check HumanEval samples when `execute`, count, and keep the generations.

    `generations_path` receives one JSON line per sample: prompt_id, sample (index), text, passed (None
    without a checker). Prompt i is sampled with seed `seed * 1_000_003 + i`. Executed samples are checked
    under `limits` (None: the sandbox's defaults); `progress(prompts sampled, total)` after each prompt.
    """
    from deltarank.train.builtin_humaneval import truncate_completion

    texts: list[list[str]] = []
    for index, item in enumerate(prompts):
        raw = sample_answers(
            model,
            tokenizer,
            item.prompt,
            samples,
            temperature=temperature,
            top_p=top_p,
            max_new_tokens=max_new_tokens,
            seed=seed * 1_000_003 + index,
        )
        texts.append([truncate_completion(t) for t in raw] if item.problem is not None else raw)
        if progress is not None:
            progress(index + 1, len(prompts))
    passed, isolation = _check(prompts, texts, limits) if execute else (None, None)
    if generations_path is not None:
        from deltarank.io.atomic import write_jsonl

        write_jsonl(
            generations_path,
            (
                {
                    "prompt_id": item.prompt_id,
                    "sample": j,
                    "text": text,
                    "passed": None if passed is None else passed[i][j],
                }
                for i, item in enumerate(prompts)
                for j, text in enumerate(texts[i])
            ),
        )
    return {
        "temperature": temperature,
        "top_p": top_p,
        "max_new_tokens": max_new_tokens,
        "executed": passed is not None,
        "isolation": isolation,  # how the samples ran (the sandbox's mode), None when not executed
        **count_diversity(texts, passed),
    }


def _check(
    prompts: Sequence[DiversityPrompt], texts: Sequence[Sequence[str]], limits: Limits | None
) -> tuple[list[list[bool]], str]:
    """Pass/fail of every HumanEval sample, each checked in the sandbox, and the sandbox's isolation mode."""
    from deltarank.evaluation.sandbox import Limits
    from deltarank.evaluation.tasks import check_completions

    if any(item.problem is None for item in prompts):
        raise InputError("evaluate.execute", "only HumanEval samples can be executed (diversity_prompts)")
    problems = [item.problem for item, group in zip(prompts, texts, strict=True) for _ in group]
    completions = [t for group in texts for t in group]
    checked = check_completions(problems, completions, limits or Limits())
    outcomes = iter(checked)
    mode = str(checked[0]["isolation"]) if checked else ""
    return [[bool(next(outcomes)["passed"]) for _ in group] for group in texts], mode
