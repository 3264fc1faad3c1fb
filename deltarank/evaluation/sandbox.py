"""Run generated code in a separate, limited process: never in the deltarank process.

Each program runs in a fresh `python -I -S` (isolated mode, no site-packages) started in its own session and
an empty temporary directory with an empty environment; `sandbox_child.py` cuts its network (a new network
namespace where the kernel allows one; socket creation refused in Python in any case) and sets its memory,
CPU-time and file-size limits before the program starts. The whole process group is killed at the wall-clock
limit. This bounds accidents (an endless loop, a huge allocation, a stray download, files written outside a
temporary directory are still possible: the process runs as the same user), it is not a security boundary
against hostile code: run untrusted models' code in a container or VM.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

CHILD = Path(__file__).with_name("sandbox_child.py")
DEFAULT_TIMEOUT_S = 10.0
DEFAULT_MEMORY_BYTES = 512 * 2**20
MAX_DETAIL_CHARS = 200


@dataclass(frozen=True)
class Limits:
    """Limits of one sandboxed run.

    Attributes:
        timeout_s: Wall-clock seconds before the process group is killed (CPU seconds are capped to match).
        memory_bytes: Address-space limit (RLIMIT_AS).
    """

    timeout_s: float = DEFAULT_TIMEOUT_S
    memory_bytes: int = DEFAULT_MEMORY_BYTES


@dataclass(frozen=True)
class Outcome:
    """What happened to one program.

    Attributes:
        passed: True when the program ran to its end (every assertion held).
        status: `passed`, `failed` or `timed out`.
        detail: The last line the program wrote to stderr (its exception), empty when it passed.
        isolation: What the child applied (`network: user+net namespace, sockets refused`, ...).
    """

    passed: bool
    status: str
    detail: str
    isolation: str

    def to_dict(self) -> dict[str, object]:
        return dict(vars(self))


def run_program(source: str, limits: Limits | None = None) -> Outcome:
    """Run a Python program in a separate limited process and report whether it finished without error."""
    limits = limits or Limits()
    with tempfile.TemporaryDirectory(prefix="deltarank-sandbox-") as folder:
        work = Path(folder)
        program, status = work / "program.py", work / "status.txt"
        program.write_text(source, encoding="utf-8")
        args = [
            sys.executable, "-I", "-S", str(CHILD), str(program), str(limits.memory_bytes),
            str(max(1, int(limits.timeout_s + 0.999))), str(status),
        ]  # fmt: skip
        with (work / "out.txt").open("wb") as out, (work / "err.txt").open("wb") as err:
            process = subprocess.Popen(
                args, cwd=work, env={"PATH": "/usr/bin:/bin", "HOME": folder}, stdin=subprocess.DEVNULL,
                stdout=out, stderr=err, start_new_session=True,
            )  # fmt: skip
            try:
                code = process.wait(timeout=limits.timeout_s)
            except subprocess.TimeoutExpired:
                code = None
            _kill_group(process)
        isolation = status.read_text().strip() if status.is_file() else "not started"
        detail = _last_line(work / "err.txt")
    # The CPU-time limit matches the wall-clock one: SIGXCPU (or the SIGKILL past the hard limit) is a timeout
    # that the kernel noticed first, which happens when the program had a core to itself.
    if code is None or code in (-signal.SIGXCPU, -signal.SIGKILL):
        return Outcome(False, "timed out", f"no result within {limits.timeout_s:g} s", isolation)
    if code == 0:
        return Outcome(True, "passed", "", isolation)
    return Outcome(False, "failed", detail or f"exit status {code}", isolation)


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    """Kill whatever the program left running in its session, then reap the child."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _last_line(path: Path) -> str:
    lines = path.read_bytes()[-4096:].decode("utf-8", "replace").strip().splitlines()
    return lines[-1][:MAX_DETAIL_CHARS] if lines else ""
