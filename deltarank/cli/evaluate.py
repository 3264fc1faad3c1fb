"""`deltarank evaluate`: accuracy, HumanEval completions (run only with --execute) or held-out loss."""

from __future__ import annotations

from typing import Any

import click

from deltarank.cli.options import device_option

EPILOG = """\b
DATA decides what is measured:
  builtin:zh-sentiment:test  exact-match accuracy of greedy answers (正面/负面)
  builtin:humaneval          greedy completions of the 164 HumanEval prompts; with --execute each
                             completion runs against the problem's tests in its own process
                             (time, memory and file-size limits, no network); never without it
  FILE.jsonl | builtin:NAME:test   mean loss per trained token (e.g. builtin:zh-text:test)
Running generated code executes whatever the model wrote, as your user: --execute limits it but is
not a security boundary (use a container for untrusted models).
"""


@click.command(epilog=EPILOG)
@click.option(
    "--model",
    help="Base model: smollm2-135m, gemma3-270m, .gguf or HF dir [with --tuned: the base its run.json records].",
)
@click.option("--tuned", type=click.Path(), help="A `deltarank train` output (LoRA adapter or full model).")
@click.option(
    "--data", required=True, help="Held-out data: builtin:zh-sentiment:test, builtin:humaneval, ..."
)
@click.option("--limit", type=int, help="First N examples [accuracy 200, HumanEval 164, loss 64].")
@click.option("--execute", is_flag=True, help="Run HumanEval completions against their tests (sandboxed).")
@click.option("--timeout", "timeout_s", type=float, default=10.0, show_default=True, help="Seconds per run.")
@click.option("--memory-mb", type=int, default=512, show_default=True, help="Memory limit per run.")
@click.option("--max-new-tokens", type=int, help="Tokens generated per answer [accuracy 8, HumanEval 384].")
@click.option("--seq-len", type=int, default=512, show_default=True, help="Tokens per sequence for the loss.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the result JSON here.")
@click.option("--force", is_flag=True, help="Replace the output if it already exists.")
@device_option
def evaluate(**options: Any) -> None:
    """Evaluate MODEL (or MODEL + a training run's output) on held-out DATA."""
    from deltarank.evaluation.run import EvalRequest
    from deltarank.evaluation.run import evaluate as run_evaluation

    if options["model"] is None and options["tuned"] is None:
        raise click.UsageError("give --model, or --tuned (a training run, evaluated on the base it records)")
    result = run_evaluation(EvalRequest(**options))
    click.echo(summary_line(result))


def summary_line(result: dict[str, Any]) -> str:
    """One line: the task's number and how many examples it covers."""
    target = result["tuned"] or result["model"]["name"]
    if result["task"] == "accuracy":
        return f"{target}: accuracy {result['accuracy']:.3f} ({result['correct']}/{result['examples']}) on {result['data']}"
    if result["task"] == "humaneval":
        if not result["executed"]:
            return f"{target}: {result['examples']} HumanEval completions generated, not run (add --execute)"
        return (
            f"{target}: HumanEval pass@1 {result['pass_at_1']:.3f} ({result['passed']}/{result['examples']})"
        )
    return f"{target}: loss {result['loss']:.4f} over {result['trained_tokens']} tokens of {result['data']}"
