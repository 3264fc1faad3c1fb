"""Wall time and peak RSS of `deltarank spectrum` from two code trees on the benchmark pairs, taking turns.

    python benchmarks/before_after.py --before /tmp/before_tree [--repeats 5] [--real-tuned DIR]

The before tree is a checkout of an earlier commit (`git worktree add /tmp/before_tree <commit>`). Each run is
a whole process started from inside its tree (so that tree's `deltarank` is the one imported), through
run_all.py's small launcher for an honest peak RSS; the two trees alternate in each round, so a slow spell of
a shared machine falls on both alike. Prints a Markdown table of medians.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import pairs
from run_all import run_process

HERE = Path(__file__).parent


def command(tree: Path, base: Path, tuned: Path, out: Path) -> list[str]:
    """`deltarank spectrum` of `tree`, run with the tree as its working directory (see module docstring)."""
    code = f"import os, sys; os.chdir({str(tree)!r}); sys.path.insert(0, {str(tree)!r}); "
    code += "from deltarank.cli import run; sys.argv[0] = 'deltarank'; run()"
    args = ["spectrum", str(base), str(tuned), "-o", str(out), "--device", "cpu"]
    return [sys.executable, "-c", code, *args]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--before", type=Path, required=True)
    parser.add_argument("--after", type=Path, default=HERE.parent)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--real-tuned", type=Path, default=HERE / "out" / "smollm2-full-10steps")
    args = parser.parse_args()
    cases = {"synthetic Llama 8 x 1024 (fp32)": pairs.synthetic_pair()}
    if args.real_tuned.exists():
        cases["SmolLM2-135M full FT pair"] = (pairs.smollm2_base_safetensors(), args.real_tuned)
    rows = ["| pair | before (s, MiB) | after (s, MiB) | after / before time |", "|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as scratch:
        for label, (base, tuned) in cases.items():
            runs: dict[str, list[tuple[float, float]]] = {"before": [], "after": []}
            for round_ in range(args.repeats):
                for name, tree in (("before", args.before), ("after", args.after)):
                    out = Path(scratch) / f"{label[:9]}-{name}-{round_}.json".replace(" ", "_")
                    runs[name].append(run_process(command(tree.resolve(), base, tuned, out)))
            medians = {
                k: (statistics.median(r[0] for r in v), statistics.median(r[1] for r in v))
                for k, v in runs.items()
            }
            (tb, mb), (ta, ma) = medians["before"], medians["after"]
            rows.append(f"| {label} | {tb:.2f}, {mb:.0f} | {ta:.2f}, {ma:.0f} | {ta / tb:.2f} |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
