"""Prove that a change of the experiment pipeline changed no measured number: compare two `deltarank reproduce`
output directories (before and after) file by file.

    # before: a git worktree of the old code
    (cd /tmp/before && PYTHONPATH=/tmp/before python -m deltarank reproduce --quick -o /tmp/old)
    # after: this tree
    python -m deltarank reproduce --quick -o /tmp/new
    python benchmarks/pipeline_identity.py /tmp/old /tmp/new [--markdown]

Compared: summary.json (every number but the measured costs and timings, which measure the machine), the
spectrum of every checkpoint (singular values and every rank, matrix by matrix), the intruder and similarity
results, and the base model's general text (the forgetting set). A key the after files add (a new measure) is
listed as an addition, not a difference; a changed or missing value is a difference. Exit status 1 on any
difference.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

MACHINE = ("train_seconds", "wall_seconds", "tokens_per_second", "peak_memory_bytes")


ADDED: list[str] = []  # keys only the after files have: new measures, reported apart


def differences(old: Any, new: Any, path: str = "") -> list[str]:
    """Every leaf where two JSON values differ, or that only the before value has (keys only the after
    value has go to ADDED)."""
    if isinstance(old, dict) and isinstance(new, dict):
        found = []
        for key in sorted(set(old) | set(new)):
            if key not in new:
                found.append(f"{path}.{key}: only in before")
            elif key not in old:
                ADDED.append(f"{path}.{key}")
            else:
                found += differences(old[key], new[key], f"{path}.{key}")
        return found
    if isinstance(old, list) and isinstance(new, list):
        if len(old) != len(new):
            return [f"{path}: {len(old)} items before, {len(new)} after"]
        return [
            d
            for i, (a, b) in enumerate(zip(old, new, strict=True))
            for d in differences(a, b, f"{path}[{i}]")
        ]
    return [] if old == new else [f"{path}: {old!r} before, {new!r} after"]


def summary_without_machine(path: Path) -> dict[str, Any]:
    summary = json.loads(path.read_text())
    summary.pop("elapsed_s", None)
    for cost in summary.get("cost", {}).values():
        for key in MACHINE:
            cost.pop(key, None)
    return summary


def spectrum_numbers(path: Path, keys: set[str] | None = None) -> list[Any]:
    """(name, σ, ranks) of every matrix; the ranks restricted to `keys` (the before file's) when given."""
    found = []
    for m in json.loads(path.read_text())["matrices"]:
        ranks = m["ranks"] if keys is None else {k: v for k, v in m["ranks"].items() if k in keys}
        found.append((m["name"], m["singular_values"], ranks))
    return found


def result_numbers(path: Path) -> Any:
    data = json.loads(path.read_text())
    for key in ("base", "tuned", "tuned_a", "tuned_b", "deltarank_version", "out_dir"):
        data.pop(key, None)
    return data


def find(folder: Path, *names: str) -> Path:
    """The first of `names` that exists in `folder` (a file was renamed between the two layouts)."""
    for name in names:
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"{folder}: none of {', '.join(names)}")


def compare(before: Path, after: Path) -> list[tuple[str, int]]:
    """(what, number of differences) for every file compared."""
    checks: list[tuple[str, int]] = []
    diff = differences(
        summary_without_machine(before / "summary.json"), summary_without_machine(after / "summary.json")
    )
    for line in diff:
        print("summary.json", line)
    checks.append(("summary.json (costs and timings left out)", len(diff)))
    for old in sorted((before / "spectra").glob("*-step*.json")):
        expected = spectrum_numbers(old)
        keys = {k for _, _, ranks in expected for k in ranks}
        same = expected == spectrum_numbers(after / "spectra" / old.name, keys)
        checks.append((f"spectra/{old.name} (σ and every rank of every matrix)", 0 if same else 1))
    for method in ("full", "lora"):
        name = f"intruders-{method}.json"
        checks.append((name, len(differences(result_numbers(before / name), result_numbers(after / name)))))
    sim = differences(
        result_numbers(find(before, "similarity.json", "similarity-full-lora.json")),
        result_numbers(find(after, "similarity-full-lora.json", "similarity.json")),
    )
    checks.append(("similarity (full vs LoRA)", len(sim)))
    general = find(before, "general_text.jsonl", "base/smollm2-135m--code/general_text.jsonl")
    general_after = find(after, "base/smollm2-135m--code/general_text.jsonl", "general_text.jsonl")
    checks.append(
        (
            "general_text.jsonl (the forgetting set)",
            0 if general.read_bytes() == general_after.read_bytes() else 1,
        )
    )
    return checks


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    args = parser.parse_args()
    checks = compare(args.before, args.after)
    print("| file | differences |\n|---|---:|")
    for what, count in checks:
        print(f"| {what} | {count} |")
    failed = sum(count for _, count in checks)
    print(f"\n{len(checks)} files compared, {failed} differences")
    if ADDED:
        shown = ", ".join(sorted({a.split("[")[0] for a in ADDED})[:12])
        print(f"added by the after files ({len(ADDED)} keys, not compared): {shown}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
