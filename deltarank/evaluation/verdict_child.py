"""The trusted side of a check: run the problem's test here, call the completion over a pipe.

Run by `deltarank.evaluation.verdict` as `python -I -S verdict_child.py REQUEST_FD ANSWER_FD` with the problem
as one JSON object on stdin (`prompt`, `test`, `entry_point`, `timeout_s`); writes one JSON verdict to stdout.
Standard library only; importable for its pure functions (`parse_plain`).

The completion never runs in this process. The prompt (trusted dataset text: some tests call helpers it
defines, e.g. HumanEval/32's `poly`) and the test are executed here, and `check` gets a proxy as `candidate`:
each call sends `repr((args, kwargs))` to the sandboxed process and reads back the repr of its result, which is
parsed as plain data only (numbers with inf and nan, strings, bytes, tuples, lists, dicts, sets, None,
booleans). An exception, an unparseable or oversized answer, an exit or a timeout fails the call, and any
failed call fails the problem even if the test catches the exception. So no object, exit, hook, thread or patch
in the completion can make a wrong answer pass: it can only return data, and the test judges the data here.
"""

import ast
import json
import math
import os
import select
import sys
import time

MAX_ANSWER_BYTES = 1 << 20
MAX_DETAIL_CHARS = 200
SPECIAL_NAMES = {"inf": math.inf, "nan": math.nan}
TIMED_OUT = "timed out"


class CandidateFailed(BaseException):
    """A call of the candidate failed; a BaseException so that a test's `except Exception` cannot hide it."""


class _Numbers(ast.NodeTransformer):
    """repr(float('inf')) is `inf` and repr(float('nan')) is `nan`: read those names as the numbers."""

    def visit_Name(self, node):
        if node.id in SPECIAL_NAMES:
            return ast.copy_location(ast.Constant(SPECIAL_NAMES[node.id]), node)
        return node


def parse_plain(text):
    """The value that `text` (a repr) denotes, when it is plain data; ValueError otherwise."""
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        raise ValueError(f"not plain data: {type(exc).__name__}") from None
    tree = _Numbers().visit(tree)
    try:
        return ast.literal_eval(tree)
    except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError) as exc:
        raise ValueError(f"not plain data: {type(exc).__name__}") from None


def _encode(args, kwargs):
    """One request line; the arguments must survive the trip as plain data."""
    text = repr((args, kwargs))
    try:
        same = "nan" in text or parse_plain(text) == (args, kwargs)  # nan != nan: trust its repr
    except ValueError:
        same = False
    if not same:
        raise CandidateFailed("the test passes an argument that is not plain data")
    return text.encode() + b"\n"


class Channel:
    """The pipes to the sandboxed process, read with a deadline and a size cap."""

    def __init__(self, requests, answers, deadline):
        self.requests, self.answers, self.deadline = requests, answers, deadline
        self.buffer = b""

    def call(self, args, kwargs):
        try:
            os.write(self.requests, _encode(args, kwargs))
        except OSError:
            raise CandidateFailed("the sandboxed process ended") from None
        answer = json.loads(self._line())
        if "ok" in answer and isinstance(answer["ok"], str):
            try:
                return parse_plain(answer["ok"])
            except ValueError:
                raise CandidateFailed(
                    f"returned a value that is not plain data: {answer['ok'][:80]}"
                ) from None
        raise CandidateFailed(str(answer.get("error", "no answer"))[:MAX_DETAIL_CHARS])

    def _line(self):
        while b"\n" not in self.buffer:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            if not select.select([self.answers], [], [], left)[0]:
                continue
            chunk = os.read(self.answers, 65536)
            if not chunk:
                raise CandidateFailed("the sandboxed process ended")
            self.buffer += chunk
            if len(self.buffer) > MAX_ANSWER_BYTES:
                raise CandidateFailed("answer too large")
        line, self.buffer = self.buffer.split(b"\n", 1)
        try:
            return line.decode()
        except UnicodeDecodeError:
            raise CandidateFailed("answer is not text") from None


def judge(problem, channel):
    """Run the problem's test against the proxy; return the verdict as a dict."""
    failures = []
    calls = 0

    def candidate(*args, **kwargs):
        nonlocal calls
        calls += 1
        try:
            return channel.call(args, kwargs)
        except TimeoutError:
            failures.append(TIMED_OUT)
        except CandidateFailed as exc:
            failures.append(str(exc))
        except Exception as exc:  # an answer line that is not the expected JSON object
            failures.append(f"unreadable answer ({type(exc).__name__})")
        raise CandidateFailed(failures[-1])

    candidate.__name__ = problem["entry_point"]
    namespace: dict = {"__name__": "__trusted_check__"}
    try:
        exec(compile(problem["prompt"], "prompt.py", "exec"), namespace)
        namespace[problem["entry_point"]] = candidate  # some tests call the function by name (HumanEval/33)
        exec(compile(problem["test"], "test.py", "exec"), namespace)
        namespace["check"](candidate)
    except BaseException as exc:
        if not failures:
            failures.append(f"{type(exc).__name__}: {exc}".splitlines()[0].rstrip(": "))
    if TIMED_OUT in failures:
        return {
            "status": "timed out",
            "detail": f"no result within {problem['timeout_s']:g} s",
            "calls": calls,
        }
    if failures:
        return {"status": "failed", "detail": failures[0][:MAX_DETAIL_CHARS], "calls": calls}
    return {"status": "passed", "detail": "", "calls": calls}


def main():
    requests, answers = int(sys.argv[1]), int(sys.argv[2])
    problem = json.loads(sys.stdin.read())
    out = os.dup(1)
    os.dup2(2, 1)  # what the test prints does not mix with the verdict
    deadline = time.monotonic() + float(problem["timeout_s"])
    verdict = judge(problem, Channel(requests, answers, deadline))
    os.write(out, json.dumps(verdict).encode() + b"\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
