"""Check one completion: the test runs in a trusted process, the completion in the sandbox, over two pipes.

deltarank starts two processes per problem and reads only from its own pipes, with a size cap and a deadline:

- the sandboxed one (`sandbox_child.py`, under bubblewrap, see `deltarank.evaluation.sandbox`) runs the
  prompt and the completion, never the test, and answers calls of the entry point with the repr of the result;
- the trusted one (`verdict_child.py`, a plain `python -I -S` that deltarank starts with the problem's prompt
  and test on its stdin) runs `check(candidate)` where `candidate` forwards each call to the sandboxed process
  and accepts only plain data back. Its one-line verdict, on a pipe that only it holds, is the outcome.

One sandboxed process serves all calls of a problem. Nothing is read from a path the sandbox could replace:
in bubblewrap its work directory is a tmpfs that vanishes with it, and the program file is copied in from a
memfd. At the deadline both processes are killed; bubblewrap's namespace takes everything the completion
started with it.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from deltarank.evaluation import sandbox
from deltarank.evaluation.sandbox import Limits, Outcome
from deltarank.train.builtin_humaneval import Problem

TRUSTED_CHILD = Path(__file__).with_name("verdict_child.py")
START_GRACE_S = 5.0  # starting both interpreters, on top of the check's own time limit
MAX_CAPTURE_BYTES = 64 * 1024
SUPERVISOR_EXITS = {70: "more processes than the sandbox allows", 71: "more memory than the sandbox allows"}


def check(problem: Problem, completion: str, limits: Limits, mode: str) -> Outcome:
    """Run `problem`'s test on `completion`; `mode` is what `sandbox.isolation(limits)` returned."""
    unsafe = mode == sandbox.UNSAFE_MODE
    source = f"{problem.prompt}{completion}\n"
    requests_r, requests_w = os.pipe()
    answers_r, answers_w = os.pipe()
    folder = tempfile.mkdtemp(prefix="deltarank-sandbox-") if unsafe else None
    try:
        boxed = _start_sandboxed(problem, source, limits, folder, stdin=requests_r, stdout=answers_w)
    finally:
        os.close(requests_r)
        os.close(answers_w)
    try:
        trusted = subprocess.Popen(
            [sys.executable, "-I", "-S", str(TRUSTED_CHILD), str(requests_w), str(answers_r)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            pass_fds=(requests_w, answers_r), start_new_session=True, env={},
        )  # fmt: skip
    except BaseException:
        _stop(boxed)
        raise
    finally:
        os.close(requests_w)
        os.close(answers_r)
    try:
        verdict, timed_out = _collect(trusted, problem, limits)
    finally:
        _stop(trusted)
        _stop(boxed)
        if folder is not None:
            _remove(Path(folder))
    return _outcome(verdict, timed_out, boxed.returncode, limits, mode)


def _start_sandboxed(
    problem: Problem, source: str, limits: Limits, folder: str | None, stdin: int, stdout: int
) -> subprocess.Popen[bytes]:
    cpu = str(math.ceil(limits.timeout_s) + 1)
    memory = str(limits.memory_bytes)
    if folder is not None:  # --unsafe-no-sandbox: the old weaker mode, a plain limited process
        program = Path(folder) / "program.py"
        program.write_text(source, encoding="utf-8")
        argv = [str(sandbox.interpreter()), "-I", "-S", "-B", str(sandbox.CHILD), str(program)]
        argv += [problem.entry_point, memory, cpu, "0", "0"]
        return subprocess.Popen(
            argv, cwd=folder, env={}, stdin=stdin, stdout=stdout, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
    memfd = os.memfd_create("program.py")
    try:
        os.write(memfd, source.encode("utf-8"))
        os.lseek(memfd, 0, os.SEEK_SET)
        inside = f"{sandbox.INSIDE_WORK}/program.py"
        argv = sandbox.bwrap_argv(
            [sandbox.INSIDE_CHILD, inside, problem.entry_point, memory, cpu, str(limits.nproc), "1"],
            extra=["--ro-bind-data", str(memfd), inside],
        )
        return subprocess.Popen(
            argv, stdin=stdin, stdout=stdout, stderr=subprocess.DEVNULL, pass_fds=(memfd,),
            start_new_session=True,
        )  # fmt: skip
    finally:
        os.close(memfd)


def _collect(
    trusted: subprocess.Popen[bytes], problem: Problem, limits: Limits
) -> tuple[dict[str, object] | None, bool]:
    """Give the trusted process the problem; read its verdict (capped) until it ends or the deadline."""
    deadline = time.monotonic() + limits.timeout_s + START_GRACE_S
    assert trusted.stdin is not None and trusted.stdout is not None
    with contextlib.suppress(BrokenPipeError):
        message = {"prompt": problem.prompt, "test": problem.test, "entry_point": problem.entry_point}
        trusted.stdin.write(json.dumps({**message, "timeout_s": limits.timeout_s}).encode())
    with contextlib.suppress(BrokenPipeError):
        trusted.stdin.close()
    received = bytearray()
    with selectors.DefaultSelector() as selector:
        selector.register(trusted.stdout, selectors.EVENT_READ)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None, True
            if not selector.select(left):
                continue
            chunk = os.read(trusted.stdout.fileno(), 65536)
            if not chunk:
                break
            received += chunk[: MAX_CAPTURE_BYTES - len(received)]
    try:
        verdict = json.loads(received.decode("utf-8").strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None, False
    return (verdict if isinstance(verdict, dict) else None), False


def _outcome(
    verdict: dict[str, object] | None, timed_out: bool, exit_code: int | None, limits: Limits, mode: str
) -> Outcome:
    if timed_out or (verdict and verdict.get("status") == "timed out"):
        return Outcome(False, "timed out", f"no result within {limits.timeout_s:g} s", mode)
    if verdict is None:
        return Outcome(False, "failed", "the checking process ended without a verdict", mode)
    if verdict.get("status") == "passed":
        return Outcome(True, "passed", "", mode)
    detail = str(verdict.get("detail", ""))
    if exit_code in SUPERVISOR_EXITS:
        detail = f"killed: {SUPERVISOR_EXITS[exit_code]} ({detail})"
    elif exit_code == 128 + signal.SIGXCPU:
        return Outcome(False, "timed out", f"CPU time limit ({math.ceil(limits.timeout_s) + 1} s)", mode)
    return Outcome(False, "failed", detail[: sandbox.MAX_DETAIL_CHARS] or "failed", mode)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Kill the process's session (bubblewrap's namespace goes with it) and reap it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        process.kill()
    process.wait()
    for stream in (process.stdin, process.stdout):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


def _remove(folder: Path) -> None:
    """Remove the unsafe mode's work folder; a program still writing into it must not crash deltarank."""
    for _ in range(5):
        shutil.rmtree(folder, ignore_errors=True)
        if not folder.exists():
            return
        time.sleep(0.05)
