"""Training cost of `deltarank train` on SmolLM2-135M (CPU), written to benchmarks/results/train.md.

The raw numbers go to benchmarks/out/train/results.json (a later run of one section keeps the other's).

Two sections:
- overhead: non-padding tokens/s of `deltarank.train.run_training` on `builtin:code` (instruction data: one
  function per sequence, most shorter than seq_len, loss on the completion) with its default padding-free
  batches and with padded batches (`batching: padded`, what it did before), against a plain
  `transformers.Trainer` loop on the same fp32 model with packed `builtin:code-raw` batches (every step
  exactly batch × seq_len real tokens: the most a padded Trainer step can carry) and the same optimizer
  settings. Each run is its own process; the kinds take turns in each round, and the table gives medians.
  Throughput = non-padding tokens of steps 2+ / their wall seconds (the first step's one-time warm-up
  excluded), measured by the same callback for every kind; also per CPU-second.
- real: `deltarank train` 20-step full and LoRA runs (builtin:code, the reproduction's batch of 4 × 128) from
  the GGUF, with tokens/s and peak memory from run.json, and `deltarank spectrum` on both outputs as written.

    python benchmarks/train_overhead.py [--section overhead|real|all] [--steps 8] [--repeats 3]
        [--kinds plain,deltarank,deltarank-padded,deltarank-packed]

Overhead runs are logged to benchmarks/out/train/overhead_runs.jsonl as they finish, and a rerun with the same
settings reuses them (delete that file to measure afresh).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OUT = HERE / "out" / "train"
RESULTS = HERE / "results"
PYTHON = sys.executable
BATCH, SEQ_LEN, LR = 4, 128, {"full": 2e-5, "lora": 2e-4}
# kind of run -> (data, batching); "plain" is the packed plain-Trainer baseline
KINDS = {
    "plain": ("builtin:code-raw", "padded"),
    "deltarank": ("builtin:code", "auto"),
    "deltarank-padded": ("builtin:code", "padded"),
    "deltarank-packed": ("builtin:code-raw", "auto"),
}
DEFAULT_KINDS = "plain,deltarank,deltarank-padded"


def fp32_model_dir() -> Path:
    """SmolLM2-135M dequantized once to an fp32 Hugging Face directory, so runs time training, not loading."""
    target = OUT / "smollm2-135m-f32"
    if (target / "model.safetensors").is_file():
        return target
    from deltarank.train.models import load_model, load_tokenizer, resolve_model

    source = resolve_model("smollm2-135m")
    load_model(source).save_pretrained(target)
    load_tokenizer(source).save_pretrained(target)
    return target


def timing_callback(packed: bool) -> Any:
    """A TrainerCallback timing the steps after the first (one-time warm-up excluded), wall and CPU seconds.

    The same callback times every loop, so all are measured alike. Tokens are the non-padding tokens of the
    timed steps: BATCH × SEQ_LEN a step when `packed`, else as the Trainer counted them.
    """
    from transformers import TrainerCallback

    class Timing(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step == 1:
                self.start, self.cpu_start = time.perf_counter(), time.process_time()
                self.tokens_start = state.num_input_tokens_seen

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            counted = state.num_input_tokens_seen - self.tokens_start
            tokens = (state.global_step - 1) * BATCH * SEQ_LEN if packed else counted
            seconds, cpu = time.perf_counter() - self.start, time.process_time() - self.cpu_start
            self.result = {"tokens": tokens, "seconds": seconds, "tokens_per_second": tokens / seconds}
            self.result["tokens_per_cpu_second"] = tokens / cpu

    return Timing()


def worker_deltarank(kind: str, method: str, steps: int, out: Path) -> dict[str, float]:
    """One `run_training` run (its own callbacks, logging and token counting included)."""
    from deltarank.train.config import TrainConfig
    from deltarank.train.trainer import run_training

    data, batching = KINDS[kind]
    config = TrainConfig(
        model=str(fp32_model_dir()),
        data=data,
        batching=batching,
        method=method,
        output_dir=str(out),
        lr=LR[method],
        max_steps=steps,
        batch_size=BATCH,
        seq_len=SEQ_LEN,
        device="cpu",
        progress="none",
    )
    timing = timing_callback(packed=False)
    run = run_training(config, callbacks=[timing]).run
    if data == "builtin:code-raw":
        assert run["tokens_seen"] == steps * BATCH * SEQ_LEN, run["tokens_seen"]
    return {**timing.result, "batching": run["batching"]}


def worker_plain(kind: str, method: str, steps: int, out: Path) -> dict[str, float]:
    """The baseline: the same model and learning rate in a plain Trainer with its defaults otherwise (its
    default optimizer, fused AdamW, is deltarank's too)."""
    from peft import LoraConfig, get_peft_model
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        DataCollatorForLanguageModeling,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    from deltarank.train.data import build_dataset

    model_dir = fp32_model_dir()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    dataset, _ = build_dataset("builtin:code-raw", tokenizer, SEQ_LEN, steps * BATCH)
    set_seed(42)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    if method == "lora":
        lora = LoraConfig(
            r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM"
        )
        model = get_peft_model(model, lora)
    args = TrainingArguments(
        output_dir=str(out),
        per_device_train_batch_size=BATCH,
        max_steps=steps,
        learning_rate=LR[method],
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        remove_unused_columns=False,
        dataloader_pin_memory=False,
    )
    timing = timing_callback(packed=True)
    collator = DataCollatorForLanguageModeling(tokenizer, mlm=False)
    plain = [{"input_ids": ids} for ids, _ in dataset.examples]
    Trainer(model=model, args=args, train_dataset=plain, data_collator=collator, callbacks=[timing]).train()
    return dict(timing.result)


def run_worker(kind: str, method: str, steps: int, index: int) -> dict[str, float]:
    """Run one measurement in a fresh process and return its JSON line."""
    out = OUT / f"{kind}-{method}-{index}"
    subprocess.run(["rm", "-rf", str(out)], check=True)
    cmd = [PYTHON, __file__, "--worker", kind, "--method", method, "--steps", str(steps), "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{kind} {method} failed:\n{done.stderr[-3000:]}")
    subprocess.run(["rm", "-rf", str(out)], check=True)  # the trained weights are not needed (0.5 GB each)
    return json.loads(done.stdout.strip().splitlines()[-1])


def overhead(steps: int, repeats: int, methods: list[str], kinds: list[str]) -> dict[str, Any]:
    """Runs of every kind take turns in each round; median and best tokens/s of each, and ratios to plain.

    Medians are the headline; best-of-N, the figure least disturbed by other work on a shared machine (a busy
    core slows a 2-thread torch step several-fold), is given beside them.
    """
    fp32_model_dir()
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {m: {kind: [] for kind in kinds} for m in methods}
    for index in range(repeats):  # round by round, so a slow spell of the shared machine hits every kind
        for method in methods:
            for kind in kinds:
                runs[method][kind].append(measured(kind, method, steps, index))
                print(f"{method} {kind} run {index}: {runs[method][kind][-1]}", file=sys.stderr)
    table: dict[str, Any] = {}
    for method in methods:
        row: dict[str, Any] = {"runs": runs[method]}
        for name, pick in (("median", statistics.median), ("best", max)):
            row[name] = {
                kind: {
                    "tokens_per_second": pick(r["tokens_per_second"] for r in runs[method][kind]),
                    "tokens_per_cpu_second": pick(r["tokens_per_cpu_second"] for r in runs[method][kind]),
                }
                for kind in kinds
            }
        table[method] = row
    return {"steps": steps, "repeats": repeats, "batch": BATCH, "seq_len": SEQ_LEN, "methods": table}


def measured(kind: str, method: str, steps: int, index: int) -> dict[str, float]:
    """One worker's result, from the run log when an earlier (interrupted) invocation already measured it."""
    log = OUT / "overhead_runs.jsonl"
    data, batching = KINDS[kind]
    key = {"kind": kind, "data": data, "batching": batching, "method": method, "steps": steps, "index": index}
    if log.is_file():
        for line in log.read_text().splitlines():
            entry = json.loads(line)
            if {k: entry.get(k) for k in key} == key:
                return dict(entry["result"])
    result = {**run_worker(kind, method, steps, index), "load": os.getloadavg()[0]}
    with log.open("a") as handle:
        handle.write(json.dumps({**key, "result": result}) + "\n")
    return result


def real_runs(steps: int) -> dict[str, Any]:
    """20-step full and LoRA runs from the GGUF via the CLI, then `deltarank spectrum` on each output."""
    return {
        "steps": steps,
        "batch": BATCH,
        "seq_len": SEQ_LEN,
        "methods": {m: real_run(m, steps) for m in LR},
    }


def real_run(method: str, steps: int) -> dict[str, Any]:
    """One `deltarank train` run as the reproduction runs it, and the spectrum of what it wrote."""
    out = OUT / f"real-{method}"
    subprocess.run(["rm", "-rf", str(out)], check=True)
    train = ["train", "--model", "smollm2-135m", "--data", "builtin:code", "--method", method]
    train += ["--output-dir", str(out), "--max-steps", str(steps), "--batch-size", str(BATCH)]
    wall, peak = timed([PYTHON, "-m", "deltarank", *train, "--seq-len", str(SEQ_LEN), "--device", "cpu"])
    run = json.loads((out / "run.json").read_text())
    result = OUT / f"spectrum-{method}.json"
    spectrum_wall, _ = timed([PYTHON, "-m", "deltarank", "spectrum", gguf(), str(out), "-o", str(result)])
    return {
        "steps": run["steps"],
        "tokens_seen": run["tokens_seen"],
        "train_seconds": run["train_seconds"],
        "tokens_per_second": run["tokens_per_second"],
        "peak_rss_train_bytes": run["peak_memory_bytes"],
        "peak_rss_process_mib": peak,
        "wall_seconds": wall,
        "trainable": run["parameters"]["trainable"],
        "total": run["parameters"]["total"],
        "spectrum_matrices": len(json.loads(result.read_text())["matrices"]),
        "spectrum_seconds": spectrum_wall,
    }


def gguf() -> str:
    from deltarank.train.models import find_default_gguf

    return str(find_default_gguf())


def timed(cmd: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB) of a command that must succeed."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{cmd} failed:\n{stderr[-3000:]}")
    return time.perf_counter() - start, usage.ru_maxrss / 1024.0


def machine() -> dict[str, Any]:
    import torch

    return {
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def real_table(real: dict[str, Any]) -> list[str]:
    """Markdown lines for the 20-step runs."""
    lines = [
        f"## {real['steps']}-step runs (builtin:code, batch {real['batch']} × {real['seq_len']} tokens)",
        "",
    ]
    lines.append("| method | trainable / total params | tokens | train s | tokens/s | peak RSS (training) |")
    lines[-1] += " process peak RSS | spectrum of the output |"
    lines.append("|---|---|---|---|---|---|---|---|")
    for method, r in real["methods"].items():
        cells = [
            method,
            f"{r['trainable']:,} / {r['total']:,}",
            f"{r['tokens_seen']:,}",
            f"{r['train_seconds']:.1f}",
            f"{r['tokens_per_second']:.1f}",
            f"{r['peak_rss_train_bytes'] / 2**30:.2f} GiB",
            f"{r['peak_rss_process_mib'] / 1024:.2f} GiB",
            f"{r['spectrum_matrices']} matrices, {r['spectrum_seconds']:.0f} s",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Tokens are non-padding tokens (the functions of builtin:code are mostly shorter than the sequence "
        "length; batches pad to their longest). Peak RSS (training) is run.json's: the resident-set high-water "
        "mark since training began; the process peak includes loading the GGUF.",
    ]
    return [*lines, "", f"Machine: `{json.dumps(real['machine'])}`", ""]


def overhead_table(over: dict[str, Any]) -> list[str]:
    """Markdown lines for the throughput comparison: medians (and best) of each kind, ratios to plain."""
    kinds = list(next(iter(over["methods"].values()))["median"])
    lines = [
        f"## Non-padding tokens/s against a plain packed `transformers.Trainer` ({over['steps']} steps of "
        f"{over['batch']} × {over['seq_len']}, steps 2+ timed, {over['repeats']} rounds, kinds taking turns)",
        "",
        "| method | kind | data | tokens/s (median) | ÷ plain | tokens/CPU-s (median) | ÷ plain | "
        "tokens/s (best) | ÷ plain |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for method, r in over["methods"].items():
        median, best = r["median"], r["best"]
        for kind in kinds:
            cells = [method, kind, f"{KINDS[kind][0]}"]
            for pick, key in ((median, "tokens_per_second"), (median, "tokens_per_cpu_second")):
                cells += [f"{pick[kind][key]:.1f}", f"{pick[kind][key] / pick['plain'][key]:.2f}×"]
            key = "tokens_per_second"
            cells += [f"{best[kind][key]:.1f}", f"{best[kind][key] / best['plain'][key]:.2f}×"]
            lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Kinds: plain = a plain `Trainer` on packed `builtin:code-raw` (every token real, no padding to waste); "
        "deltarank = `deltarank train` on `builtin:code` (instruction data, loss on the completion) with its "
        "default padding-free batches; deltarank-padded = the same with `batching: padded` (each batch padded to "
        "its longest sequence, as before); deltarank-packed = `deltarank train` on the packed data. Tokens are "
        "non-padding tokens. The machine is shared with other jobs (see the load averages): runs of all kinds "
        "take turns, so a slow spell falls on each alike, and the ratios are taken within this one run.",
        "",
        "Each run (tokens/s; tokens per CPU-second; 1-minute load average when it ended):",
        "",
    ]
    for method, r in over["methods"].items():
        for kind, runs in r["runs"].items():
            cells = "; ".join(
                f"{x['tokens_per_second']:.1f}, {x['tokens_per_cpu_second']:.1f}, {x['load']:.1f}"
                for x in runs
            )
            lines.append(f"- {method}, {kind}: {cells}")
    return [*lines, "", f"Machine: `{json.dumps(over['machine'])}`", ""]


def write_markdown(results: dict[str, Any]) -> None:
    """benchmarks/results/train.md from the results dict."""
    lines = ["# Training cost of `deltarank train` (SmolLM2-135M, CPU)", ""]
    lines += [
        "Regenerate with `python benchmarks/train_overhead.py` (its docstring says what is measured).",
        "",
    ]
    if "real" in results:
        lines += real_table(results["real"])
    if "overhead" in results:
        lines += overhead_table(results["overhead"])
    if "steps" in results:
        from train_steps import steps_table  # the in-process section's own script

        lines += steps_table(results["steps"])
    lines += ["Where a step's time goes: `benchmarks/results/train_profile.md`.", ""]
    (RESULTS / "train.md").write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--section", choices=["overhead", "real", "all"], default="all")
    parser.add_argument("--steps", type=int, default=8, help="steps per overhead run (the first is untimed)")
    parser.add_argument("--real-steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--methods", default="full,lora")
    parser.add_argument("--kinds", default=DEFAULT_KINDS, help=f"of {', '.join(KINDS)}; plain is required")
    parser.add_argument("--worker", choices=list(KINDS), help=argparse.SUPPRESS)
    parser.add_argument("--method", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker = worker_plain if args.worker == "plain" else worker_deltarank
        print(json.dumps(worker(args.worker, args.method, args.steps, args.out)))
        return
    kinds = args.kinds.split(",")
    if "plain" not in kinds or not set(kinds) <= set(KINDS):
        parser.error(f"--kinds: plain and any of {', '.join(KINDS)}")
    OUT.mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(exist_ok=True)
    path = OUT / "results.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    if args.section in ("real", "all"):
        results["real"] = {**real_runs(args.real_steps), "machine": machine()}
    if args.section in ("overhead", "all"):
        results["overhead"] = {
            **overhead(args.steps, args.repeats, args.methods.split(","), kinds),
            "machine": machine(),
        }
    path.write_text(json.dumps(results, indent=1) + "\n")
    write_markdown(results)
    print((RESULTS / "train.md").read_text())


if __name__ == "__main__":
    main()
