"""The child side of the sandbox: limit this process, cut its network, then run one program.

Run by `deltarank.evaluation.sandbox` as `python -I -S sandbox_child.py PROGRAM MEMORY_BYTES CPU_SECONDS
STATUS_FILE`, never imported by deltarank. Standard library only. In order:

1. network: a new user + network namespace (`unshare(CLONE_NEWUSER | CLONE_NEWNET)`; then CLONE_NEWNET
   alone): the process sees only a loopback device that is down, so no connection can leave it;
2. resource limits: address space (RLIMIT_AS), CPU seconds (RLIMIT_CPU), size of written files (RLIMIT_FSIZE,
   which also bounds the captured output), no core files;
3. socket creation refused in Python (`socket.socket` and friends raise), also where no namespace is allowed;
4. the program runs as `__main__`; exit status 0 when it finishes, 1 with the exception's type on stderr.

What was applied is written to STATUS_FILE before the program starts.
"""

import ctypes
import resource
import socket
import sys

CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
MAX_FILE_BYTES = 1 << 20


def _unshare_network() -> str:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return "none"
    for flags, name in (
        (CLONE_NEWUSER | CLONE_NEWNET, "user+net namespace"),
        (CLONE_NEWNET, "net namespace"),
    ):
        if libc.unshare(flags) == 0:
            return name
    return "none"


def _refuse(*args, **kwargs):
    raise PermissionError("network access is disabled in the deltarank sandbox")


def _refuse_sockets() -> None:
    for name in ("socket", "create_connection", "create_server", "socketpair", "fromfd", "getaddrinfo"):
        setattr(socket, name, _refuse)


def main() -> int:
    program, memory, cpu, status_file = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    namespace = _unshare_network()
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (MAX_FILE_BYTES, MAX_FILE_BYTES))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    _refuse_sockets()
    with open(status_file, "w") as handle:
        handle.write(f"network: {namespace}, sockets refused\n")
    with open(program, encoding="utf-8") as handle:
        source = handle.read()
    try:
        exec(compile(source, "<completion>", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
    except BaseException as exc:  # the program's failure is the result, whatever it is
        sys.stderr.write(f"\n{type(exc).__name__}: {str(exc)[:200]}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
