"""Time deltarank spectrum against its baselines in one run and write benchmarks/results/spectrum.{md,json}.

Every tool runs as its own process (wall time and peak RSS from wait4); medians of --repeats runs, the tools
taking turns in each round.

    python benchmarks/run_all.py [--repeats 5] [--real-tuned runs/reproduce/full] [--skip-weightwatcher]
        [--scale [--scale-only] [--scale-layers 32]]

--scale also generates a Llama-2-7B-shaped bf16 pair (benchmarks/pairs.py `llama7b_pair`: 224 projections,
13.5 GB per checkpoint, ~27 GB of disk), runs deltarank spectrum on it once (wall time, peak RSS), writes
benchmarks/results/scale.{md,json} (scale-<N>l.* for --scale-layers N < 32) and deletes the pair, also on failure.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

import pairs

HERE = Path(__file__).parent
RESULTS = HERE / "results"
PYTHON = sys.executable
WW_PYTHON = HERE / ".venv-ww" / "bin" / "python"


# Peak RSS must come from a process started by a small one: a child's ru_maxrss starts from the RSS of the
# process that forked it (Linux records the forked copy's high-water mark at exec), and this script holds
# loaded tensors. The launcher (python -S, ~10 MiB) runs the command and reports its wall time and maxrss.
LAUNCHER = """
import os, sys, time
start = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    os.execv(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
print(time.perf_counter() - start, usage.ru_maxrss, os.waitstatus_to_exitcode(status))
"""


def run_process(cmd: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB) of one command, measured by a small launcher; raises if it fails."""
    proc = subprocess.run(
        [sys.executable, "-S", "-c", LAUNCHER, *cmd],
        capture_output=True,
        check=False,
    )
    last = proc.stdout.decode().strip().splitlines()[-1:] or ["0 0 1"]
    wall, maxrss, code = last[0].split()
    if proc.returncode != 0 or int(code) != 0:
        raise RuntimeError(f"{cmd} failed: {proc.stderr.decode()[-2000:]}")
    return float(wall), int(maxrss) / 1024.0


def summary(runs: list[tuple[float, float]]) -> dict[str, float]:
    """Median wall time and peak RSS of several runs of one command."""
    return {
        "wall_s": statistics.median(r[0] for r in runs),
        "peak_rss_mib": statistics.median(r[1] for r in runs),
        "runs": len(runs),
    }


def interleaved(cmds: dict[str, list[str]], repeats: int) -> dict[str, dict[str, float]]:
    """Medians per command, the commands taking turns in each round (a slow spell of a shared machine then
    falls on every tool alike rather than on whichever ran during it)."""
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in cmds}
    for _ in range(repeats):
        for name, cmd in cmds.items():
            runs[name].append(run_process(cmd))
    return {name: summary(r) for name, r in runs.items()}


def deltarank_cmd(base: Path, tuned: Path, out: Path) -> list[str]:
    return [PYTHON, "-m", "deltarank", "spectrum", str(base), str(tuned), "-o", str(out), "--device", "cpu"]


def compare_pair(label: str, base: Path, tuned: Path, repeats: int, weightwatcher: bool) -> dict[str, object]:
    """deltarank vs the hand-written script (and WeightWatcher) on one checkpoint pair."""
    out = HERE / "out" / f"{label}.json"
    cmds = {
        "deltarank": deltarank_cmd(base, tuned, out),
        "handwritten": [PYTHON, str(HERE / "baseline_handwritten.py"), str(base), str(tuned)],
    }
    if weightwatcher and WW_PYTHON.exists():
        cmds["weightwatcher"] = [
            str(WW_PYTHON),
            str(HERE / "baseline_weightwatcher.py"),
            str(base),
            str(tuned),
        ]
    row: dict[str, object] = {"pair": label, **interleaved(cmds, repeats)}
    print(json.dumps(row), flush=True)
    return row


def kernel_limit(base: Path, tuned: Path, repeats: int) -> dict[str, object]:
    """deltarank's in-process time vs its decomposition kernels alone on preloaded deltas, same schedule.

    The kernels run as a run runs them (`deltarank.analysis.engine.schedule`: one worker per core, one BLAS thread
    each), so the ratio is what reading, checking, subtracting and recording cost on top. Medians of `repeats`.
    """
    from concurrent.futures import ThreadPoolExecutor

    from safetensors.torch import load_file

    from deltarank.analysis.engine import spectrum
    from deltarank.analysis.engine.schedule import applied, cpu_schedule
    from deltarank.analysis.maths.svd import resolve_solver, singular_values

    solver = resolve_solver("auto", torch.device("cpu"), torch.float32)
    b, t = load_file(str(base / "model.safetensors")), load_file(str(tuned / "model.safetensors"))
    deltas = [t[n] - w for n, w in b.items() if w.dim() == 2 and ".layers." in n]
    del b, t
    schedule = cpu_schedule()
    engine_runs, kernel_runs = [], []
    for _ in range(repeats):  # taking turns, as the tools do
        start = time.perf_counter()
        spectrum(base, tuned, device="cpu")
        engine_runs.append(time.perf_counter() - start)
        with applied(schedule), ThreadPoolExecutor(schedule.workers) as pool:
            start = time.perf_counter()
            list(pool.map(lambda d: singular_values(d, solver), deltas))
            kernel_runs.append(time.perf_counter() - start)
    engine_s, kernel_s = statistics.median(engine_runs), statistics.median(kernel_runs)
    return {
        "engine_s": engine_s,
        "kernel_s": kernel_s,
        "ratio": engine_s / kernel_s,
        "solver": solver,
        "workers": schedule.workers,
        "blas_threads": schedule.blas_threads,
    }


def lora_factor_vs_materialise(samples: int = 3) -> dict[str, float]:
    """Factor path on the whole adapter vs B·A materialised + SVD (timed on `samples` matrices)."""
    from safetensors.torch import load_file

    from deltarank.analysis.engine import spectrum

    base, adapter = pairs.lora_adapter()
    start = time.perf_counter()
    result = spectrum(base, adapter, device="cpu")
    factor_total = time.perf_counter() - start
    factors = load_file(str(adapter / "adapter_model.safetensors"))
    a_keys = sorted(k for k in factors if ".lora_A." in k)[:samples]
    times = []
    for key in a_keys:
        a, b = factors[key], factors[key.replace(".lora_A.", ".lora_B.")]
        start = time.perf_counter()
        torch.linalg.svdvals(2.0 * (b @ a))
        times.append(time.perf_counter() - start)
    n = len(result.matrices)
    per_factor, per_dense = factor_total / n, statistics.median(times)
    return {
        "matrices": n,
        "factor_total_s": factor_total,
        "factor_per_matrix_s": per_factor,
        "materialise_svd_per_matrix_s": per_dense,
        "materialise_svd_total_s_extrapolated": per_dense * n,
        "speedup": per_dense / per_factor,
    }


def memory_scaling(repeats: int) -> dict[str, float]:
    """Peak RSS of deltarank on 8- vs 16-layer synthetic pairs (hidden 1024)."""
    cmds = {}
    for layers in (8, 16):
        base, tuned = pairs.synthetic_pair(layers=layers)
        cmds[str(layers)] = deltarank_cmd(base, tuned, HERE / "out" / f"mem{layers}.json")
    rows = interleaved(cmds, repeats)
    return {
        "rss_8_layers_mib": rows["8"]["peak_rss_mib"],
        "rss_16_layers_mib": rows["16"]["peak_rss_mib"],
        "increase": rows["16"]["peak_rss_mib"] / rows["8"]["peak_rss_mib"] - 1.0,
    }


def scale_benchmark(layers: int = 32) -> dict[str, object]:
    """Generate the Llama-2-7B-shaped bf16 pair, run deltarank spectrum on it once, delete the pair."""
    root = HERE / "out" / f"llama2-7b-shaped-{layers}l"
    need = 2 * 2 * sum(math.prod(s) for s in pairs.llama7b_shapes(layers).values())
    free = shutil.disk_usage(HERE).free + _size(root)
    if free < need * 1.05:
        raise RuntimeError(
            f"the {layers}-layer scale pair needs {need / 1e9:.1f} GB of disk, {free / 1e9:.1f} GB free"
        )
    out = HERE / "out" / f"scale-{layers}l.json"
    row: dict[str, object] = {"layers": layers, "load_before": os.getloadavg()[0]}
    try:
        start = time.perf_counter()
        print(f"[scale] generating the {layers}-layer pair under {root}", flush=True)
        base, tuned = pairs.llama7b_pair(layers, root, progress=True)
        row["generate_s"] = time.perf_counter() - start
        row["checkpoint_bytes"] = _size(base)
        print(f"[scale] deltarank spectrum on {_size(base) / 1e9:.2f} GB per checkpoint", flush=True)
        wall, rss = run_process(deltarank_cmd(base, tuned, out))
        result = json.loads(out.read_text())
        row.update(
            wall_s=wall,
            peak_rss_mib=rss,
            matrices=len(result["matrices"]),
            skipped=len(result["skipped"]),
            solver=result["solver"],
            sparsity_profiles=sum(m.get("sparsity") is not None for m in result["matrices"]),
            load_after=os.getloadavg()[0],
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)
        out.unlink(missing_ok=True)
    print(json.dumps(row), flush=True)
    return row


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def scale_markdown(row: dict, env: dict) -> str:  # type: ignore[type-arg]
    """The README line of the scale benchmark."""
    return (
        f"Machine: {env['machine']}; deltarank {env['deltarank']}, torch {env['torch']}. One run.\n\n"
        "| pair | matrices | checkpoint size | generate (s) | deltarank wall (s) | peak RSS (MiB) |\n"
        "|---|---:|---:|---:|---:|---:|\n"
        f"| Llama-2-7B-shaped bf16, {row['layers']} layers | {row['matrices']} | "
        f"{row['checkpoint_bytes'] / 1e9:.2f} GB | {row['generate_s']:.0f} | {row['wall_s']:.1f} | "
        f"{row['peak_rss_mib']:.0f} |\n\n"
        f"Solver {row['solver']}, {row['skipped']} skipped, sparsity profile in "
        f"{row.get('sparsity_profiles', 'an unrecorded number of')} of {row['matrices']} records; load average {row['load_before']:.1f} before, "
        f"{row['load_after']:.1f} after (a shared machine is slower).\n"
    )


def environment() -> dict[str, str]:
    import transformers

    import deltarank

    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "machine": f"{os.cpu_count()} cores, {cpu}",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "deltarank": deltarank.__version__,
        "weightwatcher": "0.7.7" if WW_PYTHON.exists() else "not installed",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--real-tuned", type=Path, default=Path("runs/reproduce/full"))
    parser.add_argument("--skip-weightwatcher", action="store_true")
    parser.add_argument(
        "--scale", action="store_true", help="also the Llama-2-7B-shaped pair (~27 GB of disk)"
    )
    parser.add_argument("--scale-only", action="store_true", help="only the scale benchmark")
    parser.add_argument("--scale-layers", type=int, default=32, help="fewer for a test run [32]")
    args = parser.parse_args()
    env = environment()
    if args.scale or args.scale_only:
        row = scale_benchmark(args.scale_layers)
        name = "scale" if args.scale_layers == 32 else f"scale-{args.scale_layers}l"
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / f"{name}.json").write_text(json.dumps({"environment": env, "scale": row}, indent=1))
        (RESULTS / f"{name}.md").write_text(scale_markdown(row, env))
        print(scale_markdown(row, env))
        if args.scale_only:
            return
    report: dict[str, object] = {"environment": env}
    base, tuned = pairs.synthetic_pair()
    pair_rows = [
        compare_pair("synthetic-llama-8x1024", base, tuned, args.repeats, not args.skip_weightwatcher)
    ]
    if (args.real_tuned / "model.safetensors").is_file():
        real_base = pairs.smollm2_base_safetensors()
        pair_rows.append(
            compare_pair(
                "smollm2-135m-full-ft", real_base, args.real_tuned, args.repeats, not args.skip_weightwatcher
            )
        )
    report["pairs"] = pair_rows
    report["kernel_limit"] = kernel_limit(base, tuned, args.repeats)
    print(json.dumps(report["kernel_limit"]), flush=True)
    report["lora"] = lora_factor_vs_materialise()
    print(json.dumps(report["lora"]), flush=True)
    report["memory"] = memory_scaling(args.repeats)
    print(json.dumps(report["memory"]), flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "spectrum.json").write_text(json.dumps(report, indent=1))
    (RESULTS / "spectrum.md").write_text(markdown(report))
    print(markdown(report))


def markdown(report: dict) -> str:  # type: ignore[type-arg]
    """The README table."""
    env = report["environment"]
    lines = [
        f"Machine: {env['machine']}; Python {env['python']}, torch {env['torch']}, transformers "
        f"{env['transformers']}, deltarank {env['deltarank']}, WeightWatcher {env['weightwatcher']}. "
        "Whole processes, median of runs; ratios are baseline ÷ deltarank.",
        "",
        "| pair | tool | wall (s) | peak RSS (MiB) | deltarank faster by | deltarank memory ratio |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for row in report["pairs"]:
        ours = row["deltarank"]
        for tool in ("deltarank", "handwritten", "weightwatcher"):
            if tool not in row:
                continue
            r = row[tool]
            speed = "" if tool == "deltarank" else f"{r['wall_s'] / ours['wall_s']:.2f}×"
            mem = "" if tool == "deltarank" else f"{ours['peak_rss_mib'] / r['peak_rss_mib']:.2f}"
            lines.append(
                f"| {row['pair']} | {tool} | {r['wall_s']:.2f} | {r['peak_rss_mib']:.0f} | {speed} | {mem} |"
            )
    k, lora, mem = report["kernel_limit"], report["lora"], report["memory"]
    lines += [
        "",
        f"- Kernel limit (synthetic pair, in-process): deltarank {k['engine_s']:.2f} s vs its {k['solver']} kernels "
        f"alone on the preloaded deltas, same schedule ({k['workers']} at once, {k['blas_threads']} BLAS thread each), "
        f"{k['kernel_s']:.2f} s: **{k['ratio']:.2f}×**.",
        f"- LoRA adapter ({lora['matrices']} matrices of 4096×4096, r = 16): factor path {lora['factor_total_s']:.2f} s "
        f"in all ({lora['factor_per_matrix_s'] * 1000:.1f} ms/matrix) vs materialise + SVD "
        f"{lora['materialise_svd_per_matrix_s']:.2f} s/matrix (≈ {lora['materialise_svd_total_s_extrapolated'] / 60:.0f} min "
        f"for all): **{lora['speedup']:.0f}×**.",
        f"- Memory scaling: peak RSS {mem['rss_8_layers_mib']:.0f} MiB at 8 layers, {mem['rss_16_layers_mib']:.0f} MiB "
        f"at 16 layers: **{mem['increase'] * 100:+.1f}%**.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
