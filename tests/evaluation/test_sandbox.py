"""Generated code runs in its own process with a time limit, a memory limit, a file-size limit and no
network: HumanEval's canonical solutions pass, wrong completions fail, runaway ones are stopped."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from deltarank.evaluation.sandbox import Limits, run_program
from deltarank.evaluation.tasks import check_completions
from deltarank.train.builtin_humaneval import PROBLEM_COUNT, problems, truncate_completion

FAST = Limits(timeout_s=10.0, memory_bytes=512 * 2**20)


def test_humaneval_has_164_distinct_problems() -> None:
    found = problems()
    assert len(found) == PROBLEM_COUNT == 164
    assert len({p.task_id for p in found}) == 164 and found[0].task_id == "HumanEval/0"
    assert all(f"def {p.entry_point}" in p.prompt and "def check(candidate)" in p.test for p in found)


def test_canonical_solutions_pass_and_wrong_ones_fail() -> None:
    chosen = problems()[:8]
    outcomes = check_completions(chosen, [p.canonical_solution for p in chosen], FAST)
    assert [o["status"] for o in outcomes] == ["passed"] * 8
    wrong = check_completions(chosen, ["    return None\n"] * 8, FAST)
    assert not any(o["passed"] for o in wrong)
    assert all(
        o["status"] == "failed" and o["detail"].startswith(("AssertionError", "TypeError")) for o in wrong
    )


@pytest.mark.slow
def test_all_164_canonical_solutions_pass() -> None:
    found = problems()
    outcomes = check_completions(found, [p.canonical_solution for p in found], FAST)
    failed = [p.task_id for p, o in zip(found, outcomes, strict=True) if not o["passed"]]
    assert failed == []


def test_each_program_runs_in_its_own_process() -> None:
    parent = os.getpid()
    assert run_program(f"import os\nassert os.getpid() != {parent}\n", FAST).passed
    # a global set by one program is not there for the next one
    assert run_program("import builtins\nbuiltins.marker = 1\n", FAST).passed
    assert not run_program(
        "import builtins\nassert not hasattr(builtins, 'marker')\nbuiltins.marker\n", FAST
    ).passed


def test_time_limit_stops_an_endless_loop() -> None:
    started = time.monotonic()
    outcome = run_program("while True:\n    pass\n", Limits(timeout_s=1.0))
    assert outcome.status == "timed out" and not outcome.passed
    assert time.monotonic() - started < 8


def test_memory_limit_stops_a_huge_allocation() -> None:
    outcome = run_program("x = bytearray(2 * 2**30)\n", Limits(memory_bytes=256 * 2**20))
    assert outcome.status == "failed" and outcome.detail.startswith("MemoryError")


def test_file_size_limit() -> None:
    outcome = run_program("open('big', 'wb').write(b'x' * (4 << 20))\n", FAST)
    assert not outcome.passed


@pytest.fixture
def listener() -> Iterator[int]:
    """A TCP server on 127.0.0.1 in the test process that accepts whatever connects."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(5)
    thread = threading.Thread(target=lambda: _accept(server), daemon=True)
    thread.start()
    yield server.getsockname()[1]
    server.close()


def _accept(server: socket.socket) -> None:
    with contextlib.suppress(OSError):
        server.accept()[0].close()


def test_no_network(listener: int) -> None:
    guarded = run_program(
        f"import socket\nsocket.create_connection(('127.0.0.1', {listener}), timeout=2)\n", FAST
    )
    assert guarded.status == "failed" and guarded.detail.startswith("PermissionError: network access")
    # the C module itself, bypassing the Python-level refusal: only the network namespace stops it
    raw = run_program(
        f"import _socket\ns = _socket.socket()\ns.settimeout(2)\ns.connect(('127.0.0.1', {listener}))\n", FAST
    )
    assert "sockets refused" in raw.isolation
    if "namespace" in raw.isolation:
        assert raw.status == "failed" and raw.detail.startswith(
            ("ConnectionRefusedError", "OSError", "TimeoutError")
        )


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
