"""Built-in data: deterministic, disjoint splits; checkable math answers; code from the standard library."""

from __future__ import annotations

import hashlib
import itertools

import pytest

from deltarank.errors import DeltarankError
from deltarank.train import builtin_code, builtin_math
from deltarank.train.builtin_data import builtin_records, held_out_examples, parse_builtin


def test_names_parse() -> None:
    assert parse_builtin("builtin:code").split == "train"
    spec = parse_builtin("builtin:math:test")
    assert (spec.dataset, spec.split, spec.format, spec.name) == (
        "math",
        "test",
        "prompt_completion",
        "builtin:math:test",
    )
    assert parse_builtin("builtin:code-raw").format == "text"
    with pytest.raises(DeltarankError, match="unknown built-in data 'builtin:code:dev'"):
        parse_builtin("builtin:code:dev")


def test_code_split_is_a_hash_of_the_relative_path() -> None:
    # A reader can check: sha256(b"deltarank-code:<path>")[:4] as a big-endian int, mod 100, < 10 -> test.
    for path in ("json/decoder.py", "os.py", "email/parser.py", "zoneinfo/__init__.py"):
        value = int.from_bytes(hashlib.sha256(f"deltarank-code:{path}".encode()).digest()[:4], "big") % 100
        assert builtin_code.split_of(path) == ("test" if value < 10 else "train")
    assert builtin_code.split_of("zoneinfo/__init__.py") == "test"
    assert builtin_code.split_of("os.py") == "train"


def test_code_splits_are_disjoint_and_about_a_tenth() -> None:
    train = {rel for rel, _ in builtin_code.source_files("train")}
    test = {rel for rel, _ in builtin_code.source_files("test")}
    assert not train & test
    assert 0.05 < len(test) / (len(train) + len(test)) < 0.15
    assert not any(
        part in {"test", "tests", "site-packages"} for rel in train | test for part in rel.split("/")
    )


def test_code_instruction_examples_split_signature_and_body() -> None:
    records = list(itertools.islice(builtin_records(parse_builtin("builtin:code")), 50))
    assert len(records) == 50
    for record in records:
        assert record["prompt"].lstrip().startswith(("def ", "async def ", "@"))
        assert '"""' in record["prompt"] or "'''" in record["prompt"]
        assert record["completion"].strip()
        assert builtin_code.split_of(record["source"].rsplit(":", 1)[0]) == "train"


def test_math_problems_are_machine_independent() -> None:
    question, steps, answer = builtin_math.problem(0)
    assert builtin_math.problem(0) == (question, steps, answer)
    again = list(itertools.islice(builtin_math.records("train"), 5))
    assert again == list(itertools.islice(builtin_math.records("train"), 5))


def test_math_held_out_answers_check_out() -> None:
    examples = held_out_examples("builtin:math", limit=200)
    assert len(examples) == 200
    for example in examples:
        assert example.prompt.startswith("Question: ") and example.prompt.endswith("\nAnswer:")
        assert example.answer is not None and builtin_math.is_correct(example.completion, example.answer)
        assert (
            builtin_math.split_of(example.prompt.removeprefix("Question: ").removesuffix("\nAnswer:"))
            == "test"
        )
    train_prompts = {r["prompt"] for r in itertools.islice(builtin_math.records("train"), 2000)}
    assert not train_prompts & {e.prompt for e in examples}
    assert held_out_examples("math", limit=3) == held_out_examples("builtin:math:test", limit=3)


def test_math_arithmetic_answers_are_right() -> None:
    for index in range(300):
        question, _, answer = builtin_math.problem(index)
        if question.startswith("What is "):
            expression = question.removeprefix("What is ").removesuffix("?")
            assert eval(expression) == answer  # digits and + - * only


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("so 3 + 4 = 7\n#### 7", "7"),
        ("#### 1,234", "1234"),
        ("####  -5", "-5"),
        ("#### 12.0", "12"),
        ("no mark 7", None),
    ],
)
def test_extract_answer(text: str, expected: str | None) -> None:
    assert builtin_math.extract_answer(text) == expected


def test_code_held_out_raw_form() -> None:
    examples = held_out_examples("builtin:code-raw", limit=3)
    assert all(e.prompt == "" and e.answer is None and e.text == e.completion for e in examples)
    assert all(builtin_code.split_of(e.source) == "test" for e in examples)
