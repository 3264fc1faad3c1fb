"""Time per HumanEval check: the old harness (one plain limited process running prompt + completion + test)
against the bubblewrap sandbox with the trusted verdict process, on the 164 canonical solutions.

    python benchmarks/sandbox_overhead.py [--old-commit ff97947] [-o benchmarks/results/sandbox.md]

The old harness is loaded from git history (`git show COMMIT:deltarank/evaluation/sandbox*.py`), so the
numbers compare the real code. Every check must pass in both; the table says seconds per problem.
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from deltarank.evaluation import sandbox
from deltarank.evaluation.sandbox import Limits
from deltarank.evaluation.tasks import check_completions
from deltarank.train.builtin_humaneval import problems

ROOT = Path(__file__).resolve().parents[1]


def old_harness(commit: str, folder: Path):  # type: ignore[no-untyped-def]
    for name in ("sandbox.py", "sandbox_child.py"):
        text = subprocess.run(
            ["git", "show", f"{commit}:deltarank/evaluation/{name}"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout
        (folder / name).write_bytes(text)
    spec = importlib.util.spec_from_file_location("old_sandbox", folder / "sandbox.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["old_sandbox"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--old-commit", default="ff97947")
    parser.add_argument("-o", "--output", type=Path)
    args = parser.parse_args()
    found = problems()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        old = old_harness(args.old_commit, Path(folder))
        started = time.perf_counter()
        passed = sum(old.run_program(p.program(p.canonical_solution), old.Limits()).passed for p in found)
        rows.append(("old: one limited process (no namespaces but net, test in the same process)", passed,
                     time.perf_counter() - started))  # fmt: skip
    started = time.perf_counter()
    outcomes = check_completions(found, [p.canonical_solution for p in found], Limits())
    rows.append((f"new: {outcomes[0]['isolation']} + trusted verdict process",
                 sum(bool(o["passed"]) for o in outcomes), time.perf_counter() - started))  # fmt: skip
    lines = [
        "# Sandbox overhead: seconds per HumanEval check (164 canonical solutions)",
        "",
        f"`python benchmarks/sandbox_overhead.py` on {platform.machine()}, Python {platform.python_version()}, "
        f"bwrap {'present' if sandbox.bwrap_problem() is None else 'absent'}, sequential checks.",
        "",
        "| harness | passed | total s | s per problem |",
        "|---|---|---|---|",
        *(f"| {name} | {ok}/164 | {total:.1f} | {total / 164:.3f} |" for name, ok, total in rows),
        "",
        f"Overhead of the sandbox and the trusted verdict: {rows[1][2] / 164 - rows[0][2] / 164:+.3f} s per "
        f"problem ({rows[1][2] / rows[0][2]:.2f}x).",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.output:
        args.output.write_text(text)
    sys.exit(0 if all(ok == 164 for _, ok, _ in rows) else 1)


if __name__ == "__main__":
    main()
