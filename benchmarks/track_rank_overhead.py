"""What `deltarank train --track-rank N` costs: LoRA on SmolLM2-135M with and without it, written to
benchmarks/results/track_rank.md (raw numbers in benchmarks/out/track_rank/runs.jsonl).

Each run is its own `deltarank train` process (`--model smollm2-135m`, builtin:code, batch 4 × seq_len 128,
LoRA r16 on all linear layers, CPU), started with autogroup priority -10; runs without and with tracking take
turns, `--repeats` of each. Reported per run: process wall seconds, training seconds and non-padding tokens/s
from run.json (the training loop, tracking included), the seconds spent measuring (sum of the `rank_s` fields
of train_log.jsonl) and the 1-minute load average before and after. The overhead is the tracking seconds over
the training seconds of the same run (direct, not disturbed by run-to-run noise), and, as a check, the
median training seconds with tracking over those without.

    python benchmarks/track_rank_overhead.py [--steps 40] [--every 10] [--repeats 2] [--rank 16]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OUT = HERE / "out" / "track_rank"
RESULT = HERE / "results" / "track_rank.md"
BATCH, SEQ_LEN = 4, 128


def train_once(tracking: bool, index: int, args: argparse.Namespace) -> dict[str, Any]:
    """One `deltarank train` process; its timings, tracking seconds and load averages."""
    out = OUT / f"{'on' if tracking else 'off'}-{index}"
    shutil.rmtree(out, ignore_errors=True)
    command = [
        sys.executable, "-m", "deltarank", "train", "--model", "smollm2-135m", "--data", "builtin:code",
        "--method", "lora", "--lora-rank", str(args.rank), "--target-modules", "all-linear",
        "--batch-size", str(BATCH), "--seq-len", str(SEQ_LEN), "--max-steps", str(args.steps),
        "--device", "cpu", "--progress", "none", "--seed", "0", "-o", str(out),
    ]  # fmt: skip
    if tracking:
        command += ["--track-rank", str(args.every)]
    shell = "echo -10 > /proc/self/autogroup; exec " + " ".join(command)
    load_before = os.getloadavg()
    started = time.perf_counter()
    subprocess.run(["sh", "-c", shell], check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    load_after = os.getloadavg()
    record = json.loads((out / "run.json").read_text())
    lines = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    ranks = [line for line in lines if "rank" in line]
    return {
        "tracking": tracking,
        "index": index,
        "wall_s": round(wall, 2),
        "train_s": round(record["train_seconds"], 2),
        "tokens_per_s": round(record["tokens_per_second"], 1),
        "tracked_steps": [line["step"] for line in ranks],
        "matrices": sum(m["matrices"] for m in ranks[-1]["rank"].values()) if ranks else 0,
        "rank_s": round(sum(line["rank_s"] for line in ranks), 3),
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in load_after],
    }


def table(runs: list[dict[str, Any]], args: argparse.Namespace) -> str:
    """The markdown report."""
    rows = [
        "| run | --track-rank | wall s | train s | tokens/s | tracked steps | tracking s | tracking / train | "
        "load 1/5/15 before | load 1/5/15 after |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        share = f"{100 * r['rank_s'] / r['train_s']:.2f} %" if r["tracking"] else "–"
        rows.append(
            f"| {r['index'] + 1} | {args.every if r['tracking'] else 'off'} | {r['wall_s']} | {r['train_s']} | "
            f"{r['tokens_per_s']} | {', '.join(map(str, r['tracked_steps'])) or '–'} | "
            f"{r['rank_s'] if r['tracking'] else '–'} | {share} | "
            f"{' / '.join(map(str, r['load_before']))} | {' / '.join(map(str, r['load_after']))} |"
        )
    on = [r for r in runs if r["tracking"]]
    off = [r for r in runs if not r["tracking"]]
    direct = statistics.median(100 * r["rank_s"] / r["train_s"] for r in on)
    per_measure = statistics.median(r["rank_s"] / max(len(r["tracked_steps"]), 1) for r in on)
    train_on = statistics.median(r["train_s"] for r in on)
    train_off = statistics.median(r["train_s"] for r in off)
    tps_on = statistics.median(r["tokens_per_s"] for r in on)
    tps_off = statistics.median(r["tokens_per_s"] for r in off)
    return "\n".join(
        [
            "# Cost of `deltarank train --track-rank`",
            "",
            f"LoRA r{args.rank} on all linear layers of SmolLM2-135M (`--model smollm2-135m`, the GGUF dequantized "
            f"to fp32), builtin:code, batch {BATCH} × seq_len {SEQ_LEN}, {args.steps} steps on the CPU; "
            f"`--track-rank {args.every}` measures all {on[0]['matrices']} adapted matrices "
            f"{len(on[0]['tracked_steps'])} times a run. Each run is its own process with autogroup priority "
            f"-10; runs without and with tracking take turns ({len(off)} without, {len(on)} with). Machine: "
            f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared with other "
            "work: see the load averages).",
            "",
            *rows,
            "",
            f"- Tracking / training time (the `rank_s` of train_log.jsonl over run.json's train_seconds, "
            f"median of the tracked runs): **{direct:.2f} %** (target < 5 %); {per_measure:.3f} s per "
            "measurement of every matrix.",
            f"- Median training seconds with / without: {train_on:.1f} / {train_off:.1f} "
            f"({100 * (train_on / train_off - 1):+.1f} %: the load of the shared machine moves whole runs far "
            f"more than tracking does, see the load averages); tokens/s {tps_on:.1f} / {tps_off:.1f}.",
            "",
            f"Reproduce: `python benchmarks/track_rank_overhead.py --steps {args.steps} --every {args.every} "
            f"--repeats {args.repeats} --rank {args.rank}`.",
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument(
        "--report-only", action="store_true", help="Rewrite the report from the runs already in runs.jsonl."
    )
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    runs = []
    if args.report_only:
        runs = [json.loads(line) for line in (OUT / "runs.jsonl").read_text().splitlines()]
    else:
        with (OUT / "runs.jsonl").open("w") as log:
            for index in range(args.repeats):
                for tracking in (False, True):
                    run = train_once(tracking, index, args)
                    print(json.dumps(run), flush=True)
                    log.write(json.dumps(run) + "\n")
                    log.flush()
                    runs.append(run)
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(table(runs, args))
    print(f"wrote {RESULT}")


if __name__ == "__main__":
    main()
