"""Prove a refactor changed no spectrum: record "before" results with one code tree, recompute with another, compare.

    # once, with the code before the change (a git worktree of it):
    python benchmarks/identity.py prepare --code /tmp/before_tree --out /tmp/before \\
        --real-tuned benchmarks/out/smollm2-full-10steps
    # after the change, with the code importable here (or --code TREE):
    python benchmarks/identity.py check /tmp/before [--save /tmp/after]
    # or compare two directories of results already computed:
    python benchmarks/identity.py compare /tmp/before /tmp/after

`prepare` builds the inputs (benchmarks/pairs.py, under benchmarks/out/), runs `python -m deltarank spectrum`
with the given code tree on every case below and writes one JSON per case plus `manifest.json` (the commands,
the code tree and commit, and the SHA-256 of every input file). `check` reruns exactly those commands with the
other code and compares record by record:

- exact cases: max |σ_new − σ_old| / σ₁ per matrix ≤ --tol (default 1e-12) and every count rank (energy_*,
  numerical, noise_floor) and random_energy_90 equal; the other figures (entropy, stable, participation,
  norms, noise edge) are shown, not judged.
- randomized cases (`--solver randomized`): torch.svd_lowrank draws its test matrix from torch's global RNG,
  which deltarank does not seed, so two runs of the same code differ (by up to 2.1e-2·σ₁ on the synthetic
  pair at top-k 16, whose σ are 3.2e-2·σ₁ from the exact ones); σ are compared with the loose
  --randomized-tol (default 0.1·σ₁), their error against the exact case's σ is shown, and the rank and delta_norm changes the refactor intends (exact
  ‖ΔW‖_F, energy ranks against the exact total, `null` when the top-k cannot reach them, an `approximate`
  flag) are reported in their own table, not judged.

Exit status 1 on any judged mismatch (or a changed input file), 0 otherwise.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

COUNT_RANKS = ("numerical", "noise_floor")  # plus every energy_<pct>
FLOAT_FIELDS = ("delta_norm", "base_norm", "erased_fraction", "noise_edge")
FLOAT_RANKS = ("entropy", "stable", "participation")
RANDOMIZED = ("--solver", "randomized", "--top-k", "16")


@dataclass
class Case:
    """One `deltarank spectrum` command: its inputs, its extra options, and which case is its exact twin."""

    name: str
    base: str
    tuned: str
    args: list[str] = field(default_factory=list)
    reference: str | None = None  # for randomized cases: the exact case on the same pair

    @property
    def randomized(self) -> bool:
        return "randomized" in self.args


def build_cases(real_tuned: Path | None) -> list[Case]:
    """The benchmark pairs (synthetic, SmolLM2 when a tuned checkpoint is given), each exact, randomized and in
    float64, and tiny LoRA and DoRA adapters (exact and randomized). Builds missing inputs."""
    import pairs

    cases: list[Case] = []

    def variants(label: str, base: Path, tuned: Path) -> None:
        b, t = str(base.resolve()), str(tuned.resolve())
        cases.append(Case(label, b, t))
        cases.append(Case(f"{label}-randomized-k16", b, t, list(RANDOMIZED), reference=label))
        cases.append(Case(f"{label}-float64", b, t, ["--precision", "float64"]))

    variants("synthetic", *pairs.synthetic_pair())
    if real_tuned is not None:
        if not (real_tuned / "model.safetensors").is_file():
            raise SystemExit(f"{real_tuned}: no model.safetensors (give a full fine-tuning output directory)")
        variants("smollm2", pairs.smollm2_base_safetensors(), real_tuned)
    for kind in ("lora", "dora"):
        base, adapter = pairs.tiny_adapter_pair(dora=kind == "dora")
        b, t = str(base.resolve()), str(adapter.resolve())
        cases.append(Case(f"tiny-{kind}", b, t))
        cases.append(Case(f"tiny-{kind}-randomized-k16", b, t, list(RANDOMIZED), reference=f"tiny-{kind}"))
    return cases


# ------------------------------------------------------------------------------------------------ running


def code_env(code: Path | None) -> tuple[dict[str, str], Path]:
    """Environment and working directory that make `code`'s deltarank the one imported.

    `python -m` puts the working directory first on sys.path, ahead of PYTHONPATH: run from the tree itself.
    """
    env = dict(os.environ)
    if code is None:
        return env, REPO
    env["PYTHONPATH"] = os.pathsep.join([str(code), *filter(None, [env.get("PYTHONPATH")])])
    return env, code


def imported_from(code: Path | None) -> str:
    """Where `deltarank` resolves under `code_env(code)`; exits if that is not inside `code`."""
    env, cwd = code_env(code)
    out = subprocess.run(
        [sys.executable, "-c", "import deltarank; print(deltarank.__file__)"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if code is not None and not Path(out).resolve().is_relative_to(code.resolve()):
        raise SystemExit(f"deltarank resolves to {out}, not into {code}")
    return out


def git_commit(code: Path) -> str:
    proc = subprocess.run(["git", "-C", str(code), "rev-parse", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(
        ["git", "-C", str(code), "status", "--porcelain", "--", "deltarank"], capture_output=True
    )
    return proc.stdout.strip() + (" (deltarank/ modified)" if dirty.stdout.strip() else "")


def run_spectrum(case: Case, out: Path, code: Path | None) -> float:
    """Run one case's command with `code`'s deltarank on the CPU; returns the wall time."""
    env, cwd = code_env(code)
    cmd = [sys.executable, "-m", "deltarank", "spectrum", case.base, case.tuned, "-o", str(out)]
    cmd += ["--device", "cpu", *case.args]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{case.name}: {' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - start


def input_hashes(case: Case, cache: dict[str, str]) -> dict[str, str]:
    """SHA-256 of every file of the case's inputs (cached per path within one run)."""
    hashes = {}
    for root in (Path(case.base), Path(case.tuned)):
        files = sorted(p for p in root.iterdir() if p.is_file()) if root.is_dir() else [root]
        for path in files:
            if path.suffix not in (".safetensors", ".json", ".gguf"):
                continue
            key = str(path)
            if key not in cache:
                digest = hashlib.sha256()
                with path.open("rb") as handle:
                    while chunk := handle.read(1 << 24):
                        digest.update(chunk)
                cache[key] = digest.hexdigest()
            hashes[key] = cache[key]
    return hashes


# ------------------------------------------------------------------------------------------------ comparing


def is_count_rank(key: str) -> bool:
    return key.startswith("energy_") or key in COUNT_RANKS


def rel(a: float | None, b: float | None) -> float:
    if a is None or b is None:
        return 0.0 if a is None and b is None else math.inf
    scale = max(abs(a), abs(b))
    return 0.0 if scale == 0 else abs(a - b) / scale


def sigma_error(old: list[float], new: list[float]) -> float:
    """max |σ_new − σ_old| / σ₁_old over the σ both hold (inf when an exact list changes length)."""
    n = min(len(old), len(new))
    if n == 0:
        return 0.0
    top = max(abs(old[0]), 1e-300)
    return max(abs(a - b) for a, b in zip(old[:n], new[:n], strict=True)) / top


@dataclass
class CaseReport:
    name: str
    randomized: bool
    matrices: int = 0
    sigma_max: float = 0.0  # max over matrices of max|Δσ|/σ₁
    sigma_worst: str = ""
    count_mismatches: list[str] = field(default_factory=list)
    float_max: dict[str, float] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # judged
    notes: list[str] = field(default_factory=list)  # not judged (randomized changes)
    wall_s: float | None = None


def compare_case(
    case: Case, old: dict[str, Any], new: dict[str, Any], tol: float, reference: dict[str, Any] | None
) -> CaseReport:
    report = CaseReport(case.name, case.randomized)
    old_m = {m["name"]: m for m in old["matrices"]}
    new_m = {m["name"]: m for m in new["matrices"]}
    report.matrices = len(new_m)
    if list(old_m) != list(new_m):
        missing, extra = sorted(set(old_m) - set(new_m)), sorted(set(new_m) - set(old_m))
        order = "" if missing or extra else " (same names, other order)"
        report.problems.append(f"matrix names differ{order}: missing {missing[:3]}, extra {extra[:3]}")
    old_skipped = sorted(s["name"] for s in old.get("skipped", []))
    new_skipped = sorted(s["name"] for s in new.get("skipped", []))
    if old_skipped != new_skipped:
        report.problems.append(f"skipped differ: {old_skipped[:3]} vs {new_skipped[:3]}")
    for key in ("precision", "solver", "method", "thresholds"):
        if old.get(key) != new.get(key):
            (report.notes if case.randomized else report.problems).append(
                f"{key}: {old.get(key)!r} -> {new.get(key)!r}"
            )
    ref_m = {m["name"]: m for m in reference["matrices"]} if reference else {}
    null_ranks = capped_equal = capped_differ = 0
    norm_vs_exact = err_old = err_new = 0.0
    for name, o in old_m.items():
        n = new_m.get(name)
        if n is None:
            continue
        for key in ("shape", "kind", "lora_rank", "random_energy_90", "base_dtype", "tuned_dtype"):
            if o.get(key) != n.get(key):
                report.problems.append(f"{name}: {key} {o.get(key)!r} -> {n.get(key)!r}")
        so, sn = o["singular_values"], n["singular_values"]
        if len(so) != len(sn) and not case.randomized:
            report.problems.append(f"{name}: {len(so)} σ -> {len(sn)} σ")
        err = sigma_error(so, sn)
        if err > report.sigma_max or not report.sigma_worst:
            report.sigma_max, report.sigma_worst = max(err, report.sigma_max), name
        if n.get("approximate") and not case.randomized:
            report.problems.append(f"{name}: exact case marked approximate")
        for key, value in o["ranks"].items():
            new_value = n["ranks"].get(key, "absent")
            if is_count_rank(key):
                if new_value != value:
                    text = f"{name}: {key} {value} -> {new_value}"
                    if not case.randomized:
                        report.count_mismatches.append(text)
                    elif new_value is None:
                        null_ranks += 1
                    elif name in ref_m and new_value == ref_m[name]["ranks"].get(key):
                        capped_equal += 1  # changed, to the exact run's value
                    else:
                        capped_differ += 1
            elif key in FLOAT_RANKS:
                d = rel(value, new_value if isinstance(new_value, float | int) else None)
                report.float_max[key] = max(report.float_max.get(key, 0.0), d)
        for key in FLOAT_FIELDS:
            d = rel(o.get(key), n.get(key))
            report.float_max[key] = max(report.float_max.get(key, 0.0), d)
        if name in ref_m:
            norm_vs_exact = max(norm_vs_exact, rel(ref_m[name]["delta_norm"], n["delta_norm"]))
            err_old = max(err_old, sigma_error(ref_m[name]["singular_values"], so))
            err_new = max(err_new, sigma_error(ref_m[name]["singular_values"], sn))
    if report.sigma_max > tol:
        report.problems.append(
            f"σ differ by {report.sigma_max:.3g}·σ₁ > {tol:g} (worst {report.sigma_worst})"
        )
    if report.count_mismatches:
        report.problems.append(f"{len(report.count_mismatches)} count ranks differ")
    if case.randomized:
        approx = sum(bool(m.get("approximate")) for m in new_m.values())
        report.notes.append(
            f"approximate flag on {approx}/{len(new_m)}; count ranks changed: {null_ranks} to null, "
            f"{capped_equal} to the exact run's value, {capped_differ} to another value; "
            f"max rel |delta_norm − exact ‖ΔW‖_F| {norm_vs_exact:.2g}"
            + (f" (was {max_norm_gap(old_m, ref_m):.2g})" if ref_m else "")
            + (
                f"; σ error against the exact run's σ: {err_old:.2g}·σ₁ before, {err_new:.2g}·σ₁ now"
                if ref_m
                else ""
            )
        )
    return report


def max_norm_gap(old_m: dict[str, Any], ref_m: dict[str, Any]) -> float:
    return max(
        (rel(ref_m[k]["delta_norm"], m["delta_norm"]) for k, m in old_m.items() if k in ref_m), default=0.0
    )


def print_table(reports: list[CaseReport], tol: float, randomized_tol: float) -> None:
    def line(r: CaseReport) -> str:
        floats = max(r.float_max.values(), default=0.0)
        wall = "" if r.wall_s is None else f"{r.wall_s:6.1f}"
        status = "ok" if not r.problems else "MISMATCH"
        return (
            f"| {r.name:<26} | {r.matrices:>4} | {r.sigma_max:9.2e} | {len(r.count_mismatches):>5} "
            f"| {floats:9.2e} | {wall:>6} | {status} |"
        )

    head = (
        "| case                       | mats | max Δσ/σ₁ | ranks≠ | max rel other | wall s | result |\n"
        "|---|---:|---:|---:|---:|---:|---|"
    )
    exact = [r for r in reports if not r.randomized]
    randomized = [r for r in reports if r.randomized]
    print(f"\nExact cases (σ within {tol:g}·σ₁, every count rank equal):\n{head}")
    for r in exact:
        print(line(r))
    if randomized:
        print(
            f"\nRandomized cases (σ within {randomized_tol:g}·σ₁: torch.svd_lowrank is unseeded; rank and norm"
            f" changes reported, not judged):\n{head}"
        )
        for r in randomized:
            print(line(r))
    for r in reports:
        for p in r.problems:
            print(f"  {r.name}: MISMATCH {p}")
        for m in r.count_mismatches[:5]:
            print(f"  {r.name}:   {m}")
        for note in r.notes:
            print(f"  {r.name}: {note}")


def load_manifest(before: Path) -> tuple[dict[str, Any], list[Case]]:
    """The manifest and its cases that have a before result (a prepare still running lacks some: said so)."""
    manifest = json.loads((before / "manifest.json").read_text())
    cases = [Case(**c) for c in manifest["cases"]]
    missing = [c.name for c in cases if c.name not in manifest["wall_s"]]
    if missing:
        print(f"no before result yet for {missing}: left out (finish them with the same prepare command)")
    return manifest, [c for c in cases if c.name in manifest["wall_s"]]


def compare_dirs(
    before: Path, after: Path, cases: list[Case], tol: float, randomized_tol: float, walls: dict[str, float]
) -> int:
    reports = []
    for case in cases:
        old = json.loads((before / f"{case.name}.json").read_text())
        new = json.loads((after / f"{case.name}.json").read_text())
        reference = None
        if case.reference is not None and (before / f"{case.reference}.json").is_file():
            reference = json.loads((before / f"{case.reference}.json").read_text())
        report = compare_case(case, old, new, randomized_tol if case.randomized else tol, reference)
        report.wall_s = walls.get(case.name)
        reports.append(report)
    print_table(reports, tol, randomized_tol)
    failed = [r.name for r in reports if r.problems]
    print(
        f"\n{len(reports) - len(failed)}/{len(reports)} cases identical"
        + (f"; FAILED: {failed}" if failed else "")
    )
    return 1 if failed else 0


# ------------------------------------------------------------------------------------------------ commands


def prepare(args: argparse.Namespace) -> int:
    code = args.code.resolve()
    where = imported_from(code)
    print(f"deltarank from {where} (commit {git_commit(code)})")
    cases = build_cases(args.real_tuned.resolve() if args.real_tuned else None)
    if args.only:
        cases = [c for c in cases if c.name in args.only]
    args.out.mkdir(parents=True, exist_ok=True)
    hashes: dict[str, str] = {}
    manifest: dict[str, Any] = {
        "code": str(code),
        "commit": git_commit(code),
        "deltarank_file": where,
        "python": sys.executable,
        "cases": [asdict(c) for c in cases],
        "inputs": {},
        "wall_s": {},
    }
    previous = args.out / "manifest.json"
    if previous.is_file():  # keep the results an earlier prepare of the same code already wrote
        old = json.loads(previous.read_text())
        if old["commit"] == manifest["commit"] and old["code"] == manifest["code"]:
            old_cases = {c["name"]: c for c in old["cases"]}
            for case in cases:
                done = args.out / f"{case.name}.json"
                if done.is_file() and old_cases.get(case.name) == asdict(case) and case.name in old["wall_s"]:
                    manifest["wall_s"][case.name] = old["wall_s"][case.name]
    for case in cases:
        if case.name in manifest["wall_s"]:
            manifest["inputs"].update(input_hashes(case, hashes))
            print(f"{case.name:<28} kept from the earlier prepare", flush=True)
            continue
        wall = run_spectrum(case, args.out / f"{case.name}.json", code)
        manifest["inputs"].update(input_hashes(case, hashes))
        manifest["wall_s"][case.name] = wall
        print(f"{case.name:<28} {wall:7.1f} s  -> {args.out / (case.name + '.json')}", flush=True)
        (args.out / "manifest.json").write_text(json.dumps(manifest, indent=1))  # after each case
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    if args.repeat_randomized:  # how far two runs of the same code differ
        print("\nsame code, second run of the randomized cases:")
        with tempfile.TemporaryDirectory() as tmp:
            again = [c for c in cases if c.randomized]
            for case in again:
                run_spectrum(case, Path(tmp) / f"{case.name}.json", code)
            return compare_dirs(args.out, Path(tmp), again, args.tol, args.randomized_tol, {})
    return 0


def check(args: argparse.Namespace) -> int:
    manifest, cases = load_manifest(args.before)
    if args.only:
        cases = [c for c in cases if c.name in args.only]
    code = args.code.resolve() if args.code else None
    print(f"before: {manifest['deltarank_file']} (commit {manifest['commit']})")
    print(f"now:    {imported_from(code)}" + (f" (commit {git_commit(code)})" if code else ""))
    hashes: dict[str, str] = {}
    changed = [
        p for c in cases for p, h in input_hashes(c, hashes).items() if manifest["inputs"].get(p, h) != h
    ]
    if changed:
        print(f"input files changed since the before run: {changed}")
        return 1
    walls: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        after = args.save or Path(tmp)
        after.mkdir(parents=True, exist_ok=True)
        for case in cases:
            walls[case.name] = run_spectrum(case, after / f"{case.name}.json", code)
            print(f"{case.name:<28} {walls[case.name]:7.1f} s (before {manifest['wall_s'][case.name]:.1f} s)")
        return compare_dirs(args.before, after, cases, args.tol, args.randomized_tol, walls)


def compare(args: argparse.Namespace) -> int:
    _, cases = load_manifest(args.before)
    if args.only:
        cases = [c for c in cases if c.name in args.only]
    return compare_dirs(args.before, args.after, cases, args.tol, args.randomized_tol, {})


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="compute the before results with --code")
    p.add_argument("--code", type=Path, required=True, help="code tree of the before state (a git worktree)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--real-tuned", type=Path, help="full fine-tuning output of SmolLM2 (model.safetensors)")
    p.add_argument("--repeat-randomized", action="store_true", help="rerun the randomized cases, compare")
    c = sub.add_parser("check", help="recompute the before cases with the current code and compare")
    c.add_argument("before", type=Path)
    c.add_argument(
        "--code", type=Path, help="code tree to import deltarank from (default: the installed one)"
    )
    c.add_argument("--save", type=Path, help="keep the new results in this directory")
    m = sub.add_parser("compare", help="compare two result directories")
    m.add_argument("before", type=Path)
    m.add_argument("after", type=Path)
    for s in (p, c, m):
        s.add_argument("--only", nargs="+", help="case names")
        s.add_argument("--tol", type=float, default=1e-12, help="exact cases: max |Δσ|/σ₁ [1e-12]")
        s.add_argument("--randomized-tol", type=float, default=0.1, help="randomized: max |Δσ|/σ₁ [0.1]")
    args = parser.parse_args()
    return {"prepare": prepare, "check": check, "compare": compare}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
