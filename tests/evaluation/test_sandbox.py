"""Completions are checked with the test in a trusted process and the completion in a bubblewrap sandbox:
HumanEval's canonical solutions pass, wrong completions fail, runaway ones are stopped, answers are read as
plain data only, pass@k is the unbiased estimator, and without bubblewrap `--execute` is refused unless the
unsafe mode is asked for (and then recorded)."""

from __future__ import annotations

import math

import pytest

from deltarank.errors import DeltarankError, OptionError
from deltarank.evaluation import sandbox
from deltarank.evaluation.pass_at_k import estimate, pass_at_k
from deltarank.evaluation.sandbox import Limits
from deltarank.evaluation.tasks import check_completions
from deltarank.evaluation.verdict_child import parse_plain
from deltarank.train.builtin_humaneval import PROBLEM_COUNT, problems, truncate_completion

FAST = Limits(timeout_s=10.0, memory_bytes=512 * 2**20)
needs_bwrap = pytest.mark.skipif(
    sandbox.bwrap_problem() is not None, reason=f"no bubblewrap sandbox here: {sandbox.bwrap_problem()}"
)


def test_humaneval_has_164_distinct_problems() -> None:
    found = problems()
    assert len(found) == PROBLEM_COUNT == 164
    assert len({p.task_id for p in found}) == 164 and found[0].task_id == "HumanEval/0"
    assert all(f"def {p.entry_point}" in p.prompt and "def check(candidate)" in p.test for p in found)


@needs_bwrap
def test_canonical_solutions_pass_and_wrong_ones_fail() -> None:
    chosen = problems()[:8]
    outcomes = check_completions(chosen, [p.canonical_solution for p in chosen], FAST)
    assert [o["status"] for o in outcomes] == ["passed"] * 8
    assert all(str(o["isolation"]).startswith("bubblewrap: user+mount+pid+net") for o in outcomes)
    wrong = check_completions(chosen, ["    return None\n"] * 8, FAST)
    assert not any(o["passed"] for o in wrong)
    assert all(
        o["status"] == "failed" and o["detail"].startswith(("AssertionError", "TypeError")) for o in wrong
    )


@needs_bwrap
@pytest.mark.slow
def test_all_164_canonical_solutions_pass_and_a_wrong_one_per_problem_fails() -> None:
    found = problems()
    outcomes = check_completions(found, [p.canonical_solution for p in found], FAST)
    assert [p.task_id for p, o in zip(found, outcomes, strict=True) if not o["passed"]] == []
    for wrong in (["    return None\n"] * 164, [found[(i + 1) % 164].canonical_solution for i in range(164)]):
        outcomes = check_completions(found, wrong, FAST)
        assert [p.task_id for p, o in zip(found, outcomes, strict=True) if o["passed"]] == []


@needs_bwrap
def test_time_limit_stops_an_endless_loop() -> None:
    import time

    started = time.monotonic()
    (outcome,) = check_completions(problems()[:1], ["    while True:\n        pass\n"], Limits(timeout_s=1.0))
    assert outcome["status"] == "timed out" and not outcome["passed"]
    assert time.monotonic() - started < 8


@needs_bwrap
def test_memory_limit_stops_a_huge_allocation() -> None:
    body = "    x = bytearray(2 * 2**30)\n    return True\n"
    (outcome,) = check_completions(problems()[:1], [body], Limits(memory_bytes=256 * 2**20))
    assert outcome["status"] == "failed" and outcome["detail"].startswith("MemoryError")


def test_answers_are_read_as_plain_data_only() -> None:
    value = parse_plain("(inf, -inf, [1, {2: 'a'}], set(), {1}, b'x', None, True, 1e300, (1+2j))")
    assert value[:2] == (math.inf, -math.inf) and value[2:] == ([1, {2: "a"}], set(), {1}, b"x", None, True,
                                                                 1e300, 1 + 2j)  # fmt: skip
    assert math.isnan(parse_plain("nan"))
    for forged in ("<__main__.Any object at 0x7f>", "__import__('os')", "print(1)", "x", "[" * 5000, ""):
        with pytest.raises(ValueError, match="not plain data"):
            parse_plain(forged)


def test_pass_at_k_is_the_unbiased_estimator() -> None:
    assert estimate(10, 0, 1) == 0.0 and estimate(10, 10, 1) == 1.0
    assert estimate(10, 3, 1) == pytest.approx(0.3)
    assert estimate(10, 3, 5) == pytest.approx(1 - math.comb(7, 5) / math.comb(10, 5))
    assert estimate(200, 1, 100) == pytest.approx(0.5)
    assert estimate(200, 150, 100) == 1.0  # n - c < k: every draw of k holds a pass
    scores = pass_at_k({"a": [True] + [False] * 9, "b": [True] * 10})
    assert scores == pytest.approx({"pass@1": 0.55, "pass@10": 1.0})
    assert list(pass_at_k({"a": [True, False], "b": [False]})) == ["pass@1"]
    with pytest.raises(ValueError):
        estimate(5, 6, 1)


@pytest.mark.parametrize(
    ("timeout_s", "memory_mb"),
    [(math.nan, 512), (math.inf, 512), (0.0, 512), (601.0, 512), (10.0, 63), (10.0, 65537)],
)
def test_limits_are_finite_and_sane(timeout_s: float, memory_mb: int) -> None:
    with pytest.raises(OptionError):
        Limits(timeout_s, memory_mb * 2**20)


def test_without_bubblewrap_execute_is_refused_unless_unsafe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox, "bwrap_problem", lambda: "bwrap not found")
    with pytest.raises(DeltarankError, match=r"apt install bubblewrap.*--unsafe-no-sandbox"):
        check_completions(problems()[:1], [problems()[0].canonical_solution], FAST)
    unsafe = Limits(unsafe_no_sandbox=True)
    chosen = problems()[:2]
    outcomes = check_completions(chosen, [chosen[0].canonical_solution, "    return None\n"], unsafe)
    assert [o["status"] for o in outcomes] == ["passed", "failed"]
    assert all(o["isolation"] == sandbox.UNSAFE_MODE for o in outcomes)


@pytest.mark.parametrize(
    ("generated", "kept"),
    [
        ("    return x + 1\n\n\ndef other():\n    pass\n", "    return x + 1\n\n"),
        ("    return x\nif __name__ == '__main__':\n    print(1)\n", "    return x"),
        ("    return x\n", "    return x\n"),
    ],
)
def test_completion_is_cut_at_the_next_top_level_statement(generated: str, kept: str) -> None:
    assert truncate_completion(generated) == kept
