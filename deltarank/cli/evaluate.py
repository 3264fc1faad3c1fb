"""`deltarank evaluate`: every measurement a study makes, on one model: held-out loss, accuracy, HumanEval
completions (run only with --execute), general-text drift (forgetting) and diversity."""

from __future__ import annotations

import math
from typing import Any

import click

from deltarank.cli.options import CheckedFloatRange, CheckedIntRange, device_option
from deltarank.evaluation.sandbox import MAX_TIMEOUT_S, MEMORY_MB_RANGE

EPILOG = """\b
--measure picks what is measured (the same functions as a study's evaluate:):
  loss       mean loss per trained token of DATA (FILE.jsonl, builtin:NAME:test) [--limit 64]
  accuracy   exact match of greedy answers: builtin:zh-sentiment:test (正面/负面) or
             builtin:math:test (the final number) [--limit 200]
  humaneval  greedy completions of the 164 HumanEval prompts; with --execute each is
             checked against the problem's tests (pass@1); never without it
  drift      forgetting as a study measures it: the base model's own samples at T = 1 with no
             truncation, --general-samples 8 for each of 16 general prompts (--general-tokens
             128, --seed 0), the loss on them; with --tuned the tuned model's loss and its rise
             over the base: an estimate of KL(base||tuned) in nats/token. No --data
  diversity  --diversity-samples 8 samples (--temperature 0.2, --top-p 0.95, --max-new-tokens
             64, --seed 0) of each of the first --limit 4 prompts of DATA: builtin:humaneval
             (with --execute also pass/fail), a JSONL of {"prompt": ...}, or a held-out set
             (builtin:NAME:test, a training JSONL: its records' prompts); distinct outputs per
             prompt, distinct-1/2; the samples go to generations.jsonl beside -o
Without --measure, DATA decides: builtin:zh-sentiment:test -> accuracy, builtin:humaneval
-> humaneval, anything else -> loss.
Score any model's completions without loading one:
  deltarank evaluate --data builtin:humaneval --completions samples.jsonl --execute
  ({"task_id": "HumanEval/0", "completion": "..."} per line; pass@1, and @10/@100 where n allows)
\b
--execute runs model-written code in a bubblewrap sandbox (apt install bubblewrap): its own
user, mount, PID, IPC and network namespaces, a read-only view of the standard library only
(no packages, no data sets, no home, no /etc), a small private work directory, no process or
file of yours visible, limits on time, processes and memory for all its processes together,
killed with everything it started. The test runs outside it: the completion only returns
plain data, so it cannot fake a pass. Not covered: kernel exploits, slowing the machine down
until the time limit. Without bubblewrap --execute is refused; --unsafe-no-sandbox runs code
as a plain process of your user (warned about, recorded in the result).
"""


@click.command(epilog=EPILOG)
@click.option(
    "--model",
    metavar="PATH",
    help="Base model: smollm2-135m, gemma3-270m, .gguf or HF dir [with --tuned: the base its run.json records].",
)
@click.option(
    "--tuned", type=click.Path(), help="A `deltarank train` output directory (LoRA adapter or full model)."
)
@click.option(
    "--measure",
    type=click.Choice(["loss", "accuracy", "humaneval", "drift", "diversity"]),
    help="What to measure (see below) [the data decides].",
)
@click.option(
    "--data",
    metavar="PATH",
    help="Held-out data or prompts: a JSONL file, or builtin:NAME:test, builtin:humaneval (see below; not for "
    "drift).",
)
@click.option(
    "--limit",
    type=CheckedIntRange(min=1),
    metavar="N",
    help="First N examples [accuracy 200, HumanEval 164, loss 64, diversity 4 prompts].",
)
@click.option("--execute", is_flag=True, help="Run HumanEval completions against their tests (sandboxed).")
@click.option(
    "--completions",
    type=click.Path(dir_okay=False),
    help="Score these HumanEval completions (JSONL: task_id, completion) with --execute; no model.",
)
@click.option(
    "--timeout",
    "timeout_s",
    type=CheckedFloatRange(0, int(MAX_TIMEOUT_S), min_open=True),
    default=10.0,
    show_default=True,
    metavar="X",
    callback=lambda ctx, param, value: _check_timeout(value),
    help="Seconds per checked completion.",
)
@click.option(
    "--memory-mb",
    type=CheckedIntRange(*MEMORY_MB_RANGE),
    default=512,
    show_default=True,
    metavar="N",
    callback=lambda ctx, param, value: _check_memory(value),
    help="Memory of a checked completion in MiB, all its processes together.",
)
@click.option(
    "--unsafe-no-sandbox",
    is_flag=True,
    help="Without bubblewrap, run completions as plain processes of your user (NOT isolated).",
)
@click.option(
    "--max-new-tokens",
    type=CheckedIntRange(min=1),
    metavar="N",
    help="Tokens generated per answer [accuracy 8 (math 160), HumanEval 384, diversity 64].",
)
@click.option(
    "--seed", type=int, metavar="N", help="Seed of drift's general answers and diversity's samples [0]."
)
@click.option(
    "--general-tokens",
    type=CheckedIntRange(min=1),
    metavar="N",
    help="Tokens of each base-model sample for drift [128].",
)
@click.option(
    "--general-samples",
    type=CheckedIntRange(min=1),
    metavar="N",
    help="Samples per general prompt for drift [8].",
)
@click.option(
    "--diversity-samples",
    type=CheckedIntRange(min=1),
    metavar="N",
    help="Samples per prompt for diversity [8].",
)
@click.option(
    "--temperature",
    type=CheckedFloatRange(min=0, min_open=True),
    metavar="X",
    help="Sampling temperature for diversity [0.2].",
)
@click.option(
    "--top-p",
    type=CheckedFloatRange(0, 1, min_open=True),
    metavar="X",
    help="Nucleus-sampling threshold for diversity [0.95].",
)
@click.option(
    "--seq-len",
    type=CheckedIntRange(min=2),
    default=512,
    show_default=True,
    metavar="N",
    help="Tokens per sequence for the loss.",
)
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False), metavar="FILE", help="Write the result JSON here."
)
@click.option("--force", is_flag=True, help="Replace the output if it already exists.")
@device_option
def evaluate(**options: Any) -> None:
    """Measure MODEL (or MODEL + a training run's output) as a study measures it."""
    from deltarank.evaluation.run import EvalRequest
    from deltarank.evaluation.run import evaluate as run_evaluation

    if options["model"] is None and options["tuned"] is None and options["completions"] is None:
        raise click.UsageError("give --model, or --tuned (a training run, evaluated on the base it records)")
    result = run_evaluation(EvalRequest(**options))
    click.echo(summary_line(result))


def summary_line(result: dict[str, Any]) -> str:
    """One line: the task's number and how many examples it covers."""
    if result.get("completions") is not None:
        scores = ", ".join(f"{k} {v:.3f}" for k, v in result.items() if k.startswith("pass@"))
        return (
            f"{result['completions']}: HumanEval {scores} ({result['passed']}/{result['examples']} samples"
            f" of {result['tasks']} tasks passed; {result['isolation'].split(':')[0]})"
        )
    target = result["tuned"] or result["model"]["name"]
    if result["task"] == "accuracy":
        return f"{target}: accuracy {result['accuracy']:.3f} ({result['correct']}/{result['examples']}) on {result['data']}"
    if result["task"] == "drift":
        return _drift_line(target, result)
    if result["task"] == "diversity":
        return _diversity_line(target, result)
    if result["task"] == "humaneval":
        if not result["executed"]:
            return f"{target}: {result['examples']} HumanEval completions generated, not run (add --execute)"
        return (
            f"{target}: HumanEval pass@1 {result['pass_at_1']:.3f} ({result['passed']}/{result['examples']})"
        )
    return f"{target}: loss {result['loss']:.4f} over {result['trained_tokens']} tokens of {result['data']}"


def _drift_line(target: str, result: dict[str, Any]) -> str:
    """Drift: the loss on the base model's general answers (and its rise over the base's, with --tuned)."""
    if result["general_loss"] is None:
        return f"{target}: {result.get('general_note', 'no general-text tokens')}"
    line = (
        f"{target}: general-text loss {result['general_loss']:.4f} over {result['general_tokens']} tokens of "
        f"the base model's {result['general_sequences']} samples to general prompts"
    )
    if "general_loss_rise" in result and result["general_loss_rise"] is not None:
        line += f" (base {result['base_general_loss']:.4f}; {_kl_text(result)})"
    return line


def _kl_text(result: dict[str, Any]) -> str:
    """The forgetting estimate with its interval, said to be below zero where its interval lies below 0."""
    from deltarank.evaluation.drift import BELOW_ZERO, BELOW_ZERO_WHY, below_zero

    interval = result.get("general_loss_rise_ci95")
    text = f"forgetting KL(base‖tuned) {result['general_loss_rise']:+.4f} nats/token"
    if interval is not None:
        text += f" [95% CI {interval[0]:+.4f}, {interval[1]:+.4f}]"
    return f"{text}: {BELOW_ZERO} ({BELOW_ZERO_WHY})" if below_zero(interval) else text


def _diversity_line(target: str, result: dict[str, Any]) -> str:
    """Diversity: distinct outputs per prompt (and the pass rate of executed HumanEval samples)."""
    line = (
        f"{target}: {result['distinct_per_prompt']:.2f} distinct of {result['samples_per_prompt']} samples per "
        f"prompt ({result['prompts']} prompts of {result['prompt_set']})"
    )
    if result.get("pass_rate") is not None:
        line += f", pass rate {result['pass_rate']:.3f}"
    return line


def _check_timeout(value: float) -> float:
    """A finite number of seconds in (0, 600] (nan and inf would pass a plain `> 0`)."""
    from deltarank.evaluation.sandbox import MAX_TIMEOUT_S

    if not (math.isfinite(value) and 0 < value <= MAX_TIMEOUT_S):
        raise click.BadParameter(f"must be a number of seconds in (0, {MAX_TIMEOUT_S:g}], got {value}")
    return value


def _check_memory(value: int) -> int:
    from deltarank.evaluation.sandbox import MEMORY_MB_RANGE

    low, high = MEMORY_MB_RANGE
    if not low <= value <= high:
        raise click.BadParameter(f"must be {low}-{high} MiB, got {value}")
    return value
