"""Training steps of the three batchings in one process, taking turns batch by batch (SmolLM2-135M, CPU).

The same step as `Trainer`'s (forward with the loss, backward, gradient clipping at 1.0, fused AdamW) on
- plain: packed `builtin:code-raw` batches of 4 × 128 (every token real; what the plain Trainer trains on),
- padding-free: `builtin:code` batches from deltarank's own collator choice (`make_collator("auto", ...)`),
- padded: the same `builtin:code` batches padded to their longest sequence (deltarank before padding-free).
Non-padding tokens per CPU-second, on one torch thread: on a shared machine a busy core stalls a two-thread
step several-fold and inflates its CPU time with spinning, while one thread's CPU time counts only its own
work, and taking turns batch by batch exposes every kind to the same slow spells. The profile in
`benchmarks/results/train.md` shows the Trainer around the step adds 0.2%. Writes the `steps` section of
benchmarks/out/train/results.json and regenerates benchmarks/results/train.md.

    python benchmarks/train_steps.py [--rounds 2] [--batches 3] [--methods full,lora]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import torch
from train_overhead import BATCH, LR, OUT, RESULTS, SEQ_LEN, fp32_model_dir, machine, write_markdown

KINDS = ("plain", "padding-free", "padded")


def batches(tokenizer: Any, model: Any, count: int) -> dict[str, list[dict[str, Any]]]:
    """`count` batches of each kind (the first BATCH × count sequences of each data set)."""
    from deltarank.train.batching import make_collator
    from deltarank.train.data import PaddingCollator, build_dataset

    code, _ = build_dataset("builtin:code", tokenizer, SEQ_LEN, BATCH * count)
    raw, _ = build_dataset("builtin:code-raw", tokenizer, SEQ_LEN, BATCH * count)
    flat = make_collator("auto", model, tokenizer.pad_token_id)
    padded = PaddingCollator(tokenizer.pad_token_id)

    def features(examples: list[tuple[list[int], list[int]]], b: int) -> list[dict[str, list[int]]]:
        return [{"input_ids": i, "labels": lab} for i, lab in examples[BATCH * b : BATCH * (b + 1)]]

    return {
        "plain": [padded(features(raw.examples, b)) for b in range(count)],
        "padding-free": [flat(features(code.examples, b)) for b in range(count)],
        "padded": [padded(features(code.examples, b)) for b in range(count)],
    }


def real_tokens(batch: dict[str, Any]) -> int:
    """Non-padding tokens of a batch."""
    mask = batch.get("attention_mask")
    return int(mask.sum()) if mask is not None else int(batch["input_ids"].numel())


def step_ab(method: str, rounds: int, count: int) -> dict[str, Any]:
    """Rounds of every batch of every kind in turn; tokens per CPU-second of each kind, per round."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = fp32_model_dir()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    if method == "lora":
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(
            r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM"
        )
        model = get_peft_model(model, lora)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=LR[method], fused=True)
    data = batches(tokenizer, model, count)
    per_round: dict[str, list[float]] = {kind: [] for kind in KINDS}
    for index in range(rounds + 1):  # round 0 warms up every kind and is not counted
        spent = {kind: [0.0, 0] for kind in KINDS}
        for b in range(count):
            for kind in KINDS:
                batch = data[kind][b]
                start = time.process_time()
                model(**batch).loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                spent[kind][0] += time.process_time() - start
                spent[kind][1] += real_tokens(batch)
        if index:
            for kind in KINDS:
                per_round[kind].append(spent[kind][1] / spent[kind][0])
    medians = {kind: statistics.median(v) for kind, v in per_round.items()}
    return {"tokens_per_cpu_second": per_round, "median": medians}


def steps_table(steps: dict[str, Any]) -> list[str]:
    """Markdown lines for the in-process step comparison."""
    lines = [
        f"## Training steps in one process, kinds taking turns ({steps['batches']} batches of {BATCH} × "
        f"{SEQ_LEN} each, {steps['rounds']} rounds after a warm-up round, one torch thread)",
        "",
        "| method | kind | non-padding tokens per CPU-second (median of rounds) | ÷ plain | each round |",
        "|---|---|---:|---:|---|",
    ]
    for method, r in steps["methods"].items():
        for kind in KINDS:
            rounds = ", ".join(f"{x:.1f}" for x in r["tokens_per_cpu_second"][kind])
            ratio = r["median"][kind] / r["median"]["plain"]
            lines.append(f"| {method} | {kind} | {r['median'][kind]:.1f} | {ratio:.2f}× | {rounds} |")
    lines += [
        "",
        "The step is Trainer's (forward with the loss, backward, clipping, fused AdamW) without the Trainer; "
        "plain = packed `builtin:code-raw`, padding-free and padded = the same `builtin:code` batches. "
        "Regenerate with `python benchmarks/train_steps.py`.",
        "",
        f"Machine: `{json.dumps(steps['machine'])}`",
        "",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--methods", default="full,lora")
    args = parser.parse_args()
    torch.set_num_threads(1)
    OUT.mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(exist_ok=True)
    path = OUT / "results.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    methods = {m: step_ab(m, args.rounds, args.batches) for m in args.methods.split(",")}
    results["steps"] = {
        "rounds": args.rounds,
        "batches": args.batches,
        "methods": methods,
        "machine": machine(),
    }
    path.write_text(json.dumps(results, indent=1) + "\n")
    write_markdown(results)
    print((RESULTS / "train.md").read_text())


if __name__ == "__main__":
    main()
