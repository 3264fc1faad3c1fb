"""Time the exact solvers per matrix shape, and per model (sum over one model's block matrices).

    python benchmarks/solver_shapes.py

- `svd`: torch.linalg.svdvals in float32 with torch's default threads (what the hand-written script runs).
- `gram (torch)`: the float64 Gram eigenvalues in torch (the batched/CUDA path), default threads.
- `gram (numpy)`: deltarank's CPU Gram path (NumPy's OpenBLAS dsyrk + dsyevd) on one matrix, all cores' BLAS
  threads.
- `gram (numpy, concurrent)`: the same, as a run schedules it (`deltarank.analysis.engine.schedule`): one worker per
  core, each on one BLAS thread; wall time of a batch of matrices divided by their number.
Medians of 5 calls (or batches) after one warm-up, on Gaussian matrices.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch
from threadpoolctl import threadpool_limits

from deltarank.analysis.engine.schedule import applied, cpu_schedule
from deltarank.analysis.maths.svd import singular_values

# Block-matrix shapes of one layer and the layer count of each model.
MODELS = {
    "smollm2-135m": (
        [(576, 576), (192, 576), (192, 576), (576, 576), (1536, 576), (1536, 576), (576, 1536)],
        30,
    ),
    "synthetic-llama-8x1024": ([(1024, 1024)] * 4 + [(2816, 1024), (2816, 1024), (1024, 2816)], 8),
}


def median_ms(call: Callable[[], object], repeats: int = 5) -> float:
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    default_threads = torch.get_num_threads()
    shapes = sorted({shape for layer, _ in MODELS.values() for shape in layer})
    timing: dict[tuple[int, int], dict[str, float]] = {}
    for shape in shapes:
        delta = torch.randn(shape, generator=torch.Generator().manual_seed(0))
        torch.set_num_threads(default_threads)
        row = {
            "svd": median_ms(lambda d=delta: singular_values(d, "svd")),
            "gram (torch)": median_ms(lambda d=delta: singular_values(d.unsqueeze(0), "gram")),
        }
        torch.set_num_threads(1)
        with threadpool_limits(limits=default_threads, user_api="blas"):
            row["gram (numpy)"] = median_ms(lambda d=delta: singular_values(d, "gram"))
        schedule = cpu_schedule()
        batch = [delta] * (2 * schedule.workers)
        with applied(schedule), ThreadPoolExecutor(schedule.workers) as pool:
            row["gram (numpy, concurrent)"] = median_ms(
                lambda b=batch: list(pool.map(lambda d: singular_values(d, "gram"), b))
            ) / len(batch)
        timing[shape] = row
    torch.set_num_threads(default_threads)
    methods = list(next(iter(timing.values())))
    print(f"{torch.get_num_threads()} torch threads by default; ms per matrix (median of 5)\n")
    print("| shape | " + " | ".join(methods) + " |")
    print("|---|" + "---:|" * len(methods))
    for shape, row in timing.items():
        print(f"| {shape[0]}×{shape[1]} | " + " | ".join(f"{row[m]:.1f}" for m in methods) + " |")
    print("\n| model (block matrices) | " + " | ".join(methods) + " |")
    print("|---|" + "---:|" * len(methods))
    for name, (layer, count) in MODELS.items():
        totals = [count * sum(timing[s][m] for s in layer) / 1000 for m in methods]
        print(f"| {name} ({count * len(layer)}) | " + " | ".join(f"{t:.2f} s" for t in totals) + " |")


if __name__ == "__main__":
    main()
