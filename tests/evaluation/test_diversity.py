"""Diversity counts on a hand-computed example (no model)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deltarank.errors import InputError
from deltarank.evaluation.diversity import (
    count_diversity,
    distinct_n,
    distinct_strings,
    normalise_whitespace,
)
from deltarank.evaluation.prompts import diversity_prompts
from tests.train.conftest import one_thread  # noqa: F401 (autouse: tiny models run fastest on one thread)

# Two prompts, three samples each.
SAMPLES = [
    ["return a + b", "return a + b", "return  a + b"],  # 2 distinct strings; 1 after whitespace normalisation
    ["x = 1", "y = 2", "x = 1\n"],  # 3 distinct strings; 2 after normalisation ("x = 1" twice)
]
PASSED = [[True, True, False], [False, True, False]]
# Whitespace tokens of the six samples:
#   [return a + b] ×3 (the double space splits the same way), [x = 1] ×2, [y = 2]
# unigrams: 4·3 + 3·2 + 3 = 21 in all; distinct: return a + b x = 1 y 2 -> 9       => distinct-1 = 9/21
# bigrams: 3·3 + 2·2 + 2 = 15 in all; distinct: (return a) (a +) (+ b) (x =) (= 1) (y =) (= 2) -> 7
#                                                                                  => distinct-2 = 7/15
# passing: prompt 0 {"return a + b"} -> 1; prompt 1 {"y = 2"} -> 1                 => mean 1.0
# failing: prompt 0 {"return  a + b"} -> 1; prompt 1 {"x = 1", "x = 1\n"} -> 2      => mean 1.5
# pass rate 3/6 = 0.5; distinct strings per prompt (2 + 3)/2 = 2.5, normalised (1 + 2)/2 = 1.5
# its 95% t interval over the 2 prompts: s = √((0.5² + 0.5²)/1) = √0.5, half = t₀.₉₇₅,₁ · s/√2 = 12.7062 · 0.5
#                                                                 => 2.5 ± 6.3531, clipped to [1, 3]


def test_hand_computed_example() -> None:
    found = count_diversity(SAMPLES, PASSED)
    assert found == {
        "prompts": 2,
        "samples_per_prompt": 3,
        "distinct_per_prompt": 2.5,
        "distinct_per_prompt_ci95": [1.0, 3.0],  # 2.5 ± 6.3531, clipped to a count's range [1, 3 samples]
        "distinct_counts": [2, 3],
        "distinct_per_prompt_normalised": 1.5,
        "distinct_1": pytest.approx(9 / 21),
        "distinct_1_ngrams": 9,
        "total_1_ngrams": 21,
        "distinct_2": pytest.approx(7 / 15),
        "distinct_2_ngrams": 7,
        "total_2_ngrams": 15,
        "pass_rate": 0.5,
        "distinct_passing_per_prompt": 1.0,
        "distinct_failing_per_prompt": 1.5,
    }


def test_counting_parts() -> None:
    assert normalise_whitespace("  a\t b \n") == "a b"
    assert distinct_strings(["a", "a ", "a"]) == 2
    assert distinct_n(["a b a b"], 2) == (2, 3)  # (a b) (b a) (a b)
    assert distinct_n(["a"], 2) == (0, 0)
    no_checker = count_diversity([["", ""]])
    assert no_checker["distinct_per_prompt"] == 1.0 and no_checker["distinct_1"] is None
    assert no_checker["distinct_per_prompt_ci95"] is None  # one prompt: no interval
    assert "pass_rate" not in no_checker


def test_prompt_file(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in ("a", "b", "c")))
    assert [p.prompt for p in diversity_prompts(str(path), 2)] == ["a", "b"]
    path.write_text('{"text": "a"}\n')
    with pytest.raises(InputError, match='line 1 has no "prompt"'):
        diversity_prompts(str(path), 2)
    with pytest.raises(InputError, match="not found"):
        diversity_prompts(str(tmp_path / "missing.jsonl"), 2)


def test_humaneval_prompts() -> None:
    found = diversity_prompts("builtin:humaneval", 3)
    assert [p.prompt_id for p in found] == ["HumanEval/0", "HumanEval/1", "HumanEval/2"]
    assert found[0].problem is not None and found[0].prompt.startswith("from typing import List")


@pytest.fixture(scope="module")
def tiny_lm() -> tuple[object, object]:
    from tests.conftest import build_tiny_llama
    from tests.train.conftest import train_tokenizer

    tokenizer = train_tokenizer()
    model = build_tiny_llama(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        max_position_embeddings=512,
    )
    return model, tokenizer


def test_sampling_is_seeded_and_humaneval_samples_are_checked(
    tiny_lm: tuple[object, object], tmp_path: Path
) -> None:
    from deltarank.evaluation.diversity import measure_diversity, sample_answers

    model, tokenizer = tiny_lm
    options = {"temperature": 1.0, "top_p": 0.95, "max_new_tokens": 6}
    first = sample_answers(model, tokenizer, "def add(a, b):", 4, seed=7, **options)
    assert first == sample_answers(model, tokenizer, "def add(a, b):", 4, seed=7, **options)
    assert first != sample_answers(model, tokenizer, "def add(a, b):", 4, seed=8, **options)
    assert len(first) == 4

    path = tmp_path / "generations.jsonl"
    prompts = diversity_prompts("builtin:humaneval", 2)
    found = measure_diversity(
        model, tokenizer, prompts, samples=2, seed=0, execute=True, generations_path=path, **options
    )
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(g["prompt_id"], g["sample"]) for g in lines] == [
        ("HumanEval/0", 0),
        ("HumanEval/0", 1),
        ("HumanEval/1", 0),
        ("HumanEval/1", 1),
    ]
    # a random tiny model writes no working function body: every sample fails its tests
    assert [g["passed"] for g in lines] == [False] * 4 and found["pass_rate"] == 0.0
    assert found["distinct_passing_per_prompt"] == 0.0
    assert found["distinct_failing_per_prompt"] == found["distinct_per_prompt"]
    assert found["executed"] is True and found["samples_per_prompt"] == 2
    assert str(found["isolation"]).startswith(("bubblewrap:", "unsafe-no-sandbox"))  # the mode is recorded


def test_held_out_prompts_are_what_comes_before_each_answer(tmp_path: Path) -> None:
    """The default diversity prompts: the part of each held-out record before its answer, for every shape."""
    from deltarank.evaluation.prompts import PREFIX_WORDS, held_out_prompts

    chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    cases = {
        "prompt_completion": ({"prompt": "2 + 2 =", "completion": " 4"}, "2 + 2 ="),
        "messages": (
            {"messages": [*chat, {"role": "user", "content": "again"}, chat[1]]},
            [*chat, chat[0] | {"content": "again"}],
        ),
        "alpaca": (
            {"instruction": "Add", "input": "2 2", "output": "4"},
            [{"role": "user", "content": "Add\n2 2"}],
        ),
        "conversations": (
            {"conversations": [{"from": "human", "value": "hi"}, {"from": "assistant", "value": "hello"}]},
            [{"role": "user", "content": "hi"}],
        ),
        "text": (
            {"text": " ".join(f"w{i}" for i in range(40))},
            " ".join(f"w{i}" for i in range(PREFIX_WORDS)),
        ),
    }
    for shape, (record, prompt) in cases.items():
        path = tmp_path / f"{shape}.jsonl"
        path.write_text(json.dumps(record) + "\n" + json.dumps(record) + "\n", encoding="utf-8")
        found = held_out_prompts(str(path), 1)
        assert [(p.prompt_id, p.prompt) for p in found] == [("held_out:0", prompt)], shape
    code = held_out_prompts("builtin:code:test", 3)
    assert len(code) == 3 and all(isinstance(p.prompt, str) and p.prompt.startswith("def ") for p in code)
