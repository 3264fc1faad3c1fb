"""The sandboxed side of a check: limit this process, then serve calls of one completed function.

Run by `deltarank.evaluation.verdict` as `python -I -S sandbox_child.py PROGRAM ENTRY_POINT MEMORY_BYTES
CPU_SECONDS NPROC PIDNS` (inside bubblewrap, or as a plain process with `--unsafe-no-sandbox`), never imported
by deltarank. Standard library only. PROGRAM holds the problem's prompt and the completion, never the test.

1. fd 0 (requests) and fd 1 (answers) are moved to private descriptors; 0 and 1 become /dev/null, so what the
   completion prints goes nowhere;
2. resource limits for every process of the sandbox: address space (RLIMIT_AS), CPU seconds, size of written
   files, no core files, and a process count (RLIMIT_NPROC, which the kernel holds only for a non-root user;
   NPROC 0 sets none: outside a user namespace it would count all of the user's processes);
3. the process forks: the child runs the program and serves calls, the parent supervises. Inside a PID
   namespace (PIDNS=1, bubblewrap) the supervisor counts every process of the namespace and the address space
   of them all every 10 ms; above NPROC processes or MEMORY_BYTES in total it kills them all (`kill(-1)` reaches
   only the namespace) and exits 70 or 71. When the server ends, the supervisor kills what is left and exits
   with the server's status; bubblewrap's init then ends and the kernel kills anything left in the namespace.
   Without a PID namespace deltarank kills the session it started the supervisor in;
4. the server runs the program, then answers each request line (the repr of `(args, kwargs)`, written by the
   trusted side) with one JSON line: `{"ok": repr(result)}` or `{"error": "Type: message"}`. The answers are
   plain text: the trusted side (`verdict_child.py`) decides what they are worth.
"""

import json
import math
import os
import resource
import signal
import sys
import time

MAX_FILE_BYTES = 1 << 20
MAX_DETAIL_CHARS = 200
POLL_S = 0.01
EXIT_NPROC, EXIT_MEMORY = 70, 71
PAGE = os.sysconf("SC_PAGE_SIZE")


def _limit(memory, cpu, nproc):
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (MAX_FILE_BYTES, MAX_FILE_BYTES))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if nproc:
        resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))


def _describe(exc):
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text.splitlines()[0][:MAX_DETAIL_CHARS] if text.strip() else type(exc).__name__


def _serve(requests, answers, program, entry_point):
    """Run the program, then answer every request; never returns."""
    reader, writer = os.fdopen(requests, "rb"), os.fdopen(answers, "wb")
    error, function = None, print  # replaced by the program's function
    try:
        with open(program, encoding="utf-8") as handle:
            source = handle.read()
        namespace: dict = {"__name__": "__main__"}
        exec(compile(source, "program.py", "exec"), namespace)
        function = namespace[entry_point]
    except BaseException as exc:  # the program's failure is the answer to every call
        error = _describe(exc)
    for line in reader:
        if error is None:
            try:
                args, kwargs = eval(line, {"__builtins__": {}, "inf": math.inf, "nan": math.nan})
                answer = {"ok": repr(function(*args, **kwargs))}
            except BaseException as exc:
                answer = {"error": _describe(exc)}
        else:
            answer = {"error": error}
        writer.write(json.dumps(answer).encode() + b"\n")
        writer.flush()
    os._exit(0)


def _namespace_usage():
    """(processes, address-space bytes) of every process in this PID namespace but init and this one."""
    count, total = 0, 0
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) in (1, os.getpid()):
            continue
        try:
            with open(f"/proc/{name}/statm", "rb") as handle:
                total += int(handle.read().split()[0]) * PAGE
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile, or a zombie
        count += 1
    return count, total


def _supervise(server, memory, nproc, pidns):
    """Wait for the server; in a PID namespace, hold the limits for all processes together."""
    while True:
        pid, status = os.waitpid(server, os.WNOHANG)
        if pid == server:
            break
        if pidns:
            count, total = _namespace_usage()
            if count > nproc or total > memory:
                os.kill(-1, signal.SIGKILL)
                sys.stderr.write(f"sandbox: {count} processes, {total >> 20} MiB together: killed\n")
                return EXIT_NPROC if count > nproc else EXIT_MEMORY
        time.sleep(POLL_S)
    if pidns:
        os.kill(-1, signal.SIGKILL)  # whatever the program left running (only this namespace)
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def main():
    program, entry_point = sys.argv[1], sys.argv[2]
    memory, cpu, nproc = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    # kill(-1) is only ever used where it can reach nothing but the sandbox: PID 2 of a fresh namespace.
    pidns = sys.argv[6] == "1" and os.getpid() == 2
    requests, answers = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    _limit(memory, cpu, nproc)
    server = os.fork()
    if server == 0:
        _serve(requests, answers, program, entry_point)
    os.close(requests)
    os.close(answers)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    return _supervise(server, memory, nproc, pidns)


if __name__ == "__main__":
    sys.exit(main())
