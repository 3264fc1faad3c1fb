"""Where generated code runs: a bubblewrap sandbox, a security boundary for model-written programs.

Each completion runs (`sandbox_child.py`) under bubblewrap (`bwrap`, Debian package `bubblewrap`, what Flatpak
uses) with these properties:

- new user, mount, PID, IPC, UTS, cgroup and network namespaces (`--unshare-all --unshare-user`), all
  capabilities dropped, uid/gid 65534 inside, a new session (no terminal injection), killed when deltarank dies
  (`--die-with-parent`); no network at all, and no Unix socket outside (no path of the host is visible);
- a read-only view of only what the interpreter needs: the system's shared libraries (/usr/lib, /lib, ...)
  and the Python installation's prefix with every site-packages and dist-packages folder hidden by an empty
  tmpfs, so the standard library only: no installed package, no data set (not HumanEval's answer key), no
  /etc, /home, /root (but the prefix itself), no project tree; an empty environment;
- writable only its own work directory and /tmp, both small fresh tmpfs (`WORK_BYTES` each), gone with it;
  the program file in it holds the prompt and the completion, never the test;
- /proc of its own PID namespace, a minimal /dev: it sees and can signal no process outside, deltarank
  included; when its main process ends (or deltarank kills it at the time limit) the namespace's init ends and
  the kernel kills everything it started, daemons included;
- limits: address space per process (RLIMIT_AS = memory), CPU seconds, 1 MiB per written file, and for all its
  processes together a supervisor inside the namespace that kills them all above `nproc` processes or above
  `memory` bytes of address space in total (checked every 10 ms: a burst between two checks is bounded by the
  per-process limits; RLIMIT_NPROC holds as well where the caller is not root).

What it does not cover: CPU and memory bandwidth (a program can slow the machine down until its time limit),
kernel vulnerabilities (it is not a VM), and reading the standard library and system libraries, which are
not secret. The verdict itself is decided outside the sandbox (`deltarank.evaluation.verdict`).

Without bubblewrap, or where it cannot create namespaces, `--execute` is refused with one line saying how to
get it, unless `unsafe_no_sandbox` is set: then each program runs as a plain process of the user with only the
resource limits (no namespaces, files and processes of the user reachable), a warning line is printed and
every result records that mode.
"""

from __future__ import annotations

import logging
import math
import shutil
import site
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from deltarank.errors import DeltarankError, OptionError

logger = logging.getLogger(__name__)

CHILD = Path(__file__).with_name("sandbox_child.py")
DEFAULT_TIMEOUT_S = 10.0
DEFAULT_MEMORY_BYTES = 512 * 2**20
DEFAULT_NPROC = 64
MAX_TIMEOUT_S = 600.0
MEMORY_MB_RANGE = (64, 65536)
WORK_BYTES = 16 * 2**20
MAX_DETAIL_CHARS = 200
INSIDE_WORK = "/work"
INSIDE_CHILD = "/run/deltarank/sandbox_child.py"
LIBRARY_DIRS = ("/usr/lib", "/usr/lib64", "/usr/lib32", "/lib", "/lib64", "/lib32")
INSTALL_HINT = (
    "install bubblewrap (apt install bubblewrap, dnf install bubblewrap, or `make install` as root)"
)
UNSAFE_MODE = "unsafe-no-sandbox: a plain process with resource limits only (no namespaces; the user's files and processes are reachable)"


@dataclass(frozen=True)
class Limits:
    """Limits of one sandboxed check, and whether running without the sandbox was explicitly allowed.

    Attributes:
        timeout_s: Wall-clock seconds for the whole check of one completion (CPU seconds are capped to match).
        memory_bytes: Address space per process and of all the sandbox's processes together.
        nproc: Processes the sandbox may hold at once.
        unsafe_no_sandbox: Without bubblewrap, run as a plain limited process instead of refusing.
    """

    timeout_s: float = DEFAULT_TIMEOUT_S
    memory_bytes: int = DEFAULT_MEMORY_BYTES
    nproc: int = DEFAULT_NPROC
    unsafe_no_sandbox: bool = False

    def __post_init__(self) -> None:
        if not (math.isfinite(self.timeout_s) and 0 < self.timeout_s <= MAX_TIMEOUT_S):
            raise OptionError(
                f"timeout must be a number of seconds in (0, {MAX_TIMEOUT_S:g}], got {self.timeout_s}"
            )
        low, high = (m * 2**20 for m in MEMORY_MB_RANGE)
        if not low <= self.memory_bytes <= high:
            raise OptionError(
                f"memory must be {MEMORY_MB_RANGE[0]}-{MEMORY_MB_RANGE[1]} MiB, got {self.memory_bytes >> 20} MiB"
            )

    def record(self) -> dict[str, object]:
        """The limits as a result records them."""
        return {
            "timeout_s": self.timeout_s,
            "memory_mb": self.memory_bytes >> 20,
            "nproc": self.nproc,
            "unsafe_no_sandbox": self.unsafe_no_sandbox,
        }


@dataclass(frozen=True)
class Outcome:
    """What happened to one completion.

    Attributes:
        passed: True when the problem's test, run in the trusted process, accepted every answer.
        status: `passed`, `failed` or `timed out`.
        detail: Why it failed (an exception's type and first line, at most 200 characters), empty when it passed.
        isolation: How the completion ran (see `isolation`).
    """

    passed: bool
    status: str
    detail: str
    isolation: str

    def to_dict(self) -> dict[str, object]:
        return dict(vars(self))


def isolation(limits: Limits) -> str:
    """The isolation mode that checks under `limits` get, in words (recorded in every result).

    Raises:
        DeltarankError: bubblewrap is missing or cannot create namespaces and `unsafe_no_sandbox` is not set.
    """
    problem = bwrap_problem()
    if problem is None:
        return (
            "bubblewrap: user+mount+pid+net+ipc+uts namespaces, read-only stdlib only, "
            f"nproc {limits.nproc}, memory {limits.memory_bytes >> 20} MiB total"
        )
    if not limits.unsafe_no_sandbox:
        raise DeltarankError(
            f"--execute runs model-written code and needs bubblewrap to isolate it ({problem}): {INSTALL_HINT}; "
            "or pass --unsafe-no-sandbox to run it without isolation"
        )
    return UNSAFE_MODE


def warn_if_unsafe(mode: str) -> None:
    """A weaker mode is never silent: one warning line."""
    if mode == UNSAFE_MODE:
        logger.warning("running generated code WITHOUT a sandbox (--unsafe-no-sandbox): %s", mode)


@lru_cache(maxsize=1)
def bwrap_problem() -> str | None:
    """None when bubblewrap runs a sandbox here; otherwise why not, in a few words."""
    if bwrap_path() is None:
        return "bwrap not found"
    try:
        probe = subprocess.run(
            bwrap_argv(["-c", "pass"]), stdin=subprocess.DEVNULL, capture_output=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bwrap failed: {exc}"
    if probe.returncode != 0:
        lines = probe.stderr.decode("utf-8", "replace").strip().splitlines()
        return f"bwrap cannot create a sandbox here: {lines[-1][:200] if lines else probe.returncode}"
    return None


def bwrap_path() -> str | None:
    return shutil.which("bwrap") or (
        str(Path("/usr/bin/bwrap")) if Path("/usr/bin/bwrap").is_file() else None
    )


def interpreter() -> Path:
    """The base installation's interpreter (a virtual environment's python resolves to it)."""
    version = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    for folder in (Path(sys.base_exec_prefix) / "bin", Path(sys.base_prefix) / "bin"):
        if (folder / version).is_file():
            return (folder / version).resolve()
    return Path(sys.executable).resolve()


def bwrap_argv(python_args: list[str], extra: list[str] | None = None) -> list[str]:
    """bubblewrap's command line that runs the base interpreter with `python_args` in a fresh sandbox."""
    argv = [
        bwrap_path() or "bwrap", "--unshare-all", "--unshare-user", "--die-with-parent", "--new-session",
        "--cap-drop", "ALL", "--uid", "65534", "--gid", "65534", "--clearenv", "--hostname", "sandbox",
    ]  # fmt: skip
    argv += _system_binds()
    argv += ["--proc", "/proc", "--dev", "/dev"]
    argv += ["--size", str(WORK_BYTES), "--tmpfs", "/tmp", "--size", str(WORK_BYTES), "--tmpfs", INSIDE_WORK]
    argv += ["--ro-bind", str(CHILD), INSIDE_CHILD, *(extra or []), "--chdir", INSIDE_WORK]
    return [*argv, str(interpreter()), "-I", "-S", "-B", *python_args]


@lru_cache(maxsize=1)
def _system_binds() -> tuple[str, ...]:
    """Read-only binds of the shared libraries and the Python prefix, with every package folder hidden."""
    args: list[str] = []
    bound: list[Path] = []
    for name in LIBRARY_DIRS:
        path = Path(name)
        if path.is_symlink():
            args += ["--symlink", str(path.readlink()), name]
        elif path.is_dir():
            args += ["--ro-bind", name, name]
            bound.append(path)
    python = interpreter()
    for prefix in {Path(sys.base_prefix).resolve(), Path(sys.base_exec_prefix).resolve()}:
        if prefix in (Path("/"), Path("/usr")):
            stdlib = Path(sysconfig.get_paths(vars={"base": str(prefix)})["stdlib"]).resolve()
            if not any(stdlib.is_relative_to(b) for b in bound):
                args += ["--ro-bind", str(stdlib), str(stdlib)]
                bound.append(stdlib)
            args += ["--ro-bind", str(python), str(python)]
        elif not any(prefix.is_relative_to(b) for b in bound):
            args += ["--ro-bind", str(prefix), str(prefix)]
            bound.append(prefix)
    for folder in sorted(_package_dirs(bound)):
        args += ["--tmpfs", str(folder)]
    return tuple(args)


def _package_dirs(bound: list[Path]) -> set[Path]:
    """Every site-packages / dist-packages folder inside the bound folders (installed packages, data sets)."""
    found = {Path(p).resolve() for p in site.getsitepackages([sys.base_prefix, sys.base_exec_prefix])}
    found |= {Path(sysconfig.get_paths()[k]).resolve() for k in ("purelib", "platlib")}
    for root in bound:
        for pattern in ("python3*/*-packages", "lib*/python3*/*-packages"):
            found |= {p.resolve() for p in root.glob(pattern)}
    return {p for p in found if p.is_dir() and any(p.is_relative_to(b) for b in bound)}
