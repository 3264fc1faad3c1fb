"""`deltarank recommend BASE TUNED (--energy τ | --budget N | --budget-rank R) -o DIR` (or `recommend RUN ...`): per-module LoRA
ranks from the singular values of ΔW, written as a peft LoraConfig (DIR/adapter_config.json) that `deltarank
train --config DIR/adapter_config.json` trains with, beside DIR/recommendation.json."""

from __future__ import annotations

from typing import Any

import click

from deltarank.analysis.results.columns import MATRICES
from deltarank.analysis.results.recommendation import RESULT_FILE, RecommendationResult, summarise
from deltarank.cli.options import (
    CheckedFloatRange,
    CheckedIntRange,
    analysis_options,
    echo,
    fetch_missing,
    output_option,
    quiet_option,
)
from deltarank.cli.references import base_of_runs
from deltarank.io.atomic import check_output_dir, refuse_overlap
from deltarank.io.progress import Progress
from deltarank.train.lora_patterns import ADAPTER_CONFIG, write_recommendation


@click.command()
@click.argument("base", metavar="[BASE]", type=click.Path(path_type=str))
@click.argument("tuned", metavar="TUNED", required=False, type=click.Path(path_type=str))
@output_option(
    f"Output directory (new or empty): {ADAPTER_CONFIG} and {RESULT_FILE} (written whole or not at all).",
    required=True,
)
@click.option(
    "--energy",
    type=CheckedFloatRange(0, 1, min_open=True),
    default=None,
    metavar="X",
    help="Each matrix's r_τ: the smallest rank whose top σ keep this share τ of ‖ΔW‖² (e.g. 0.9).",
)
@click.option(
    "--budget",
    type=CheckedIntRange(min=1),
    default=None,
    metavar="N",
    help="N trainable LoRA parameters (a rank-r LoRA on an (out, in) matrix costs r·(out + in)), spent "
    "greedily on the ranks that add the most σ² per parameter.",
)
@click.option(
    "--budget-rank",
    type=CheckedIntRange(min=1),
    default=None,
    metavar="N",
    help="R: the budget of a uniform rank-R LoRA on the same analysed matrices, Σ R·(out + in) (the best "
    "allocation at the cost of LoRA r = R), spent as --budget.",
)
@click.option(
    "--null",
    "null",
    type=click.Path(dir_okay=False, path_type=str),
    default=None,
    help="A spectrum result of a null ΔW (e.g. `deltarank spectrum` of two seeds' runs): no rank keeps a σ "
    "at or below that matrix's null σ₁. The spectrum's own noise floor always applies.",
)
@analysis_options
@quiet_option
def recommend(
    base: str,
    tuned: str | None,
    output: str,
    force: bool,
    energy: float | None,
    budget: int | None,
    budget_rank: int | None,
    null: str | None,
    quiet: bool,
    download: bool,
    **options: Any,
) -> None:
    """Recommend a LoRA rank per weight matrix from the measured singular values of ΔW = TUNED − BASE.

    \b
    --energy τ   each matrix's r_τ (smallest r with Σ_{i≤r} σ_i² ≥ τ ‖ΔW‖²)
    --budget N   N trainable parameters, greedy by σ_k² / (out + in); optimal when
                 the budget runs out along that order (recommendation.json's
                 energy_bound says how far from optimal it can be otherwise)
    --budget-rank R  the budget of a uniform rank-R LoRA on the same matrices,
                 N = Σ R·(out + in)
    No rank goes past a matrix's noise floor; rank 0 leaves a module out.

    TUNED is a full fine-tune, a PEFT adapter or a `deltarank train` output (`deltarank recommend RUN` takes
    BASE from its run.json). DIR receives adapter_config.json (peft's LoraConfig: r the most common rank,
    the others in rank_pattern by full module name, α = 2r per module) and recommendation.json (per module:
    rank, retained energy, residual, energy against rank). Train with it: `deltarank train --config
    DIR/adapter_config.json --model M --data D -o OUT`; draw it: `deltarank plot DIR/recommendation.json`.
    """
    from deltarank.analysis.tools.recommend import check_policy, read_null
    from deltarank.analysis.tools.recommend import recommend as run_recommend

    if tuned is None:  # a train output alone: BASE is the one its run.json records
        tuned = base
        base, line = base_of_runs("recommend", [tuned], "BASE TUNED")
        echo(line, quiet)
    check_policy(energy, budget, budget_rank)
    read_null(null)  # an unreadable null file fails before any work
    refuse_overlap(output, [base, tuned, null])  # --force replaces the directory: never an input
    check_output_dir(output, force)
    fetch_missing(download, [base, tuned])
    with Progress("recommend", unit="matrices", quiet=quiet) as progress:
        result = run_recommend(
            base,
            tuned,
            energy=energy,
            budget=budget,
            budget_rank=budget_rank,
            null=null,
            progress=progress.hook,
            **options,
        )
    written = write_recommendation(result, output, force)
    echo(format_table(result), quiet)
    echo(f"Wrote {', '.join(str(path) for path in written)}", quiet)


def format_table(result: RecommendationResult) -> str:
    """Per module type: matrices, rank range, parameters and the share of their Σ‖ΔW‖² kept; then the totals."""
    header = f"{'module':<14}{MATRICES:>9}{'rank':>10}{'parameters':>14}{'energy kept':>13}"
    lines = [header, "-" * len(header)]
    for module, items in result.by_module().items():
        span, params, kept = summarise(items)
        kept_text = "-" if kept is None else f"{kept:.3f}"
        lines.append(f"{module:<14}{len(items):>9}{span:>10}{params:>14,}{kept_text:>13}")
    policy = f"τ = {result.energy:g}" if result.policy == "energy" else f"budget {result.budget:,}"
    if result.budget_rank is not None:
        policy += f", uniform r = {result.budget_rank}'s"
    left_out = sum(1 for m in result.matrices if m.rank == 0)
    lines.append(
        f"{len(result.matrices)} matrices ({policy}): r = {result.lora_r} (α = {result.lora_alpha}), "
        f"{len(result.ranks())} adapted, {left_out} left out; {result.trainable_parameters:,} parameters keep "
        f"{result.retained_energy:.3f} of Σ‖ΔW‖²"
    )
    if result.optimal:
        lines.append("optimal: no allocation within the budget keeps more")
    elif result.energy_bound is not None:
        lines.append(
            f"greedy: no allocation within the budget keeps more than {result.energy_bound:.4f} of Σ‖ΔW‖² "
            f"(unspent: {result.budget_left:,} parameters)"
        )
    return "\n".join(lines)
