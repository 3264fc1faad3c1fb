"""The GPU standing order in one script: CUDA tests, a few training steps per method on CUDA against the CPU,
and `deltarank spectrum --device cuda` on a Llama-2-7B-shaped bf16 pair (a few layers).

Run on a lent GPU machine (the device tool), from the repository root:

    python3 benchmarks/gpu_check.py OUT_DIR [--layers 4] [--steps 8]

Writes OUT_DIR/gpu_check.json and OUT_DIR/gpu_check.md (copied by hand to benchmarks/results/gpu.md) and the
logs of each step. Every step runs even when an earlier one fails; failures are recorded, not hidden.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def run(cmd: list[str], log: Path, timeout: float) -> tuple[int, float]:
    """Run `cmd`, its output to `log`; (exit status, wall seconds)."""
    start = time.perf_counter()
    with log.open("w") as handle:
        try:
            code = subprocess.run(cmd, stdout=handle, stderr=subprocess.STDOUT, timeout=timeout, check=False)
            status = code.returncode
        except subprocess.TimeoutExpired:
            status = 124
    return status, time.perf_counter() - start


class GpuMemory:
    """Peak GPU memory used (nvidia-smi, every 0.2 s) while a command runs."""

    def __init__(self) -> None:
        self.peak_mib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                capture_output=True,
                text=True,
                check=False,
            )
            if out.returncode == 0 and out.stdout.strip():
                self.peak_mib = max(self.peak_mib, int(out.stdout.split()[0]))
            time.sleep(0.2)

    def __enter__(self) -> GpuMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def final_loss(run_dir: Path) -> float | None:
    """The last logged training loss of a run (train_log.jsonl)."""
    log = run_dir / "train_log.jsonl"
    if not log.is_file():
        return None
    losses = [json.loads(line).get("loss") for line in log.read_text().splitlines() if line.strip()]
    losses = [x for x in losses if x is not None]
    return losses[-1] if losses else None


def train_steps(out: Path, work: Path, steps: int) -> list[dict[str, Any]]:
    """Full, LoRA and QLoRA: `steps` steps on CUDA and on the CPU from the same seed; final losses compared."""
    from tests.train.conftest import save_tiny_model, write_jsonl

    model = save_tiny_model(work / "tiny")
    data = write_jsonl(
        work / "data.jsonl",
        [{"instruction": "Double", "input": str(i), "output": str(2 * i)} for i in range(32)],
    )
    rows = []
    for method in ("full", "lora", "qlora"):
        row: dict[str, Any] = {"method": method}
        for device in ("cuda", "cpu"):
            run_dir = work / f"{method}-{device}"
            cmd = [
                sys.executable, "-m", "deltarank", "train", "--model", str(model), "--data", str(data),
                "--method", method, "-o", str(run_dir), "--max-steps", str(steps), "--batch-size", "4",
                "--seq-len", "64", "--device", device,
            ]  # fmt: skip
            status, wall = run(cmd, out / f"train-{method}-{device}.log", 300)
            row[device] = {"exit": status, "wall_s": round(wall, 2), "final_loss": final_loss(run_dir)}
        cuda, cpu = row["cuda"]["final_loss"], row["cpu"]["final_loss"]
        row["abs_loss_difference"] = None if cuda is None or cpu is None else abs(cuda - cpu)
        rows.append(row)
    spec = work / "full-spectrum-cuda.json"
    spec_cpu = work / "full-spectrum-cpu.json"
    for device, path in (("cuda", spec), ("cpu", spec_cpu)):
        cmd = [
            sys.executable,
            "-m",
            "deltarank",
            "spectrum",
            str(model),
            str(work / "full-cuda"),
            "-o",
            str(path),
        ]
        run([*cmd, "--device", device], out / f"spectrum-tiny-{device}.log", 300)
    if spec.is_file() and spec_cpu.is_file():
        a = json.loads(spec.read_text())["matrices"]
        b = json.loads(spec_cpu.read_text())["matrices"]
        worst = 0.0
        for ma, mb in zip(a, b, strict=True):
            sa, sb = ma["singular_values"], mb["singular_values"]
            worst = max(worst, max(abs(x - y) for x, y in zip(sa, sb, strict=True)) / max(sb[0], 1e-30))
        rows.append({"spectrum_cuda_vs_cpu_max_rel_sigma_difference": worst, "matrices": len(a)})
    return rows


def scale(out: Path, layers: int) -> dict[str, Any]:
    """deltarank spectrum --device cuda on a Llama-2-7B-shaped bf16 pair of `layers` layers."""
    import pairs

    root = Path(tempfile.mkdtemp(prefix="scale-"))
    start = time.perf_counter()
    base, tuned = pairs.llama7b_pair(layers, root)
    row: dict[str, Any] = {"layers": layers, "generate_s": round(time.perf_counter() - start, 1)}
    result = out / "scale-spectrum.json"
    cmd = [sys.executable, "-m", "deltarank", "spectrum", str(base), str(tuned), "-o", str(result)]
    with GpuMemory() as memory:
        status, wall = run([*cmd, "--device", "cuda"], out / "scale-spectrum.log", 400)
    row.update(exit=status, wall_s=round(wall, 1), peak_gpu_mib=memory.peak_mib)
    if result.is_file():
        data = json.loads(result.read_text())
        row.update(matrices=len(data["matrices"]), solver=data.get("solver"), device=data.get("device"))
        result.unlink()  # large; the numbers above are what is kept
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--skip-scale", action="store_true", help="only the tests and the training steps")
    args = parser.parse_args()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    import torch

    report: dict[str, Any] = {
        "gpu": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    for name in ("transformers", "peft", "bitsandbytes"):
        try:
            report[name] = __import__(name).__version__
        except Exception as exc:  # recorded, not hidden
            report[name] = f"not importable: {exc}"
    status, wall = run(
        [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", "tests"],
        out / "pytest-gpu.log",
        300,
    )
    report["gpu_tests"] = {"exit": status, "wall_s": round(wall, 1)}
    with tempfile.TemporaryDirectory() as folder:
        try:
            report["train"] = train_steps(out, Path(folder), args.steps)
        except Exception as exc:
            report["train"] = f"failed: {exc!r}"
    try:
        if not args.skip_scale:
            report["scale"] = scale(out, args.layers)
    except Exception as exc:
        report["scale"] = f"failed: {exc!r}"
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
