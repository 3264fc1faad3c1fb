"""`deltarank intruders BASE TUNED` (or `intruders RUN`): intruder dimensions of the tuned weights (Shuttleworth et al. 2024).

With `--mitigate λ -o DIR`, TUNED is written to DIR with each intruder direction's singular value scaled by λ,
as peft's `reduce_intruder_dimension` does (see `deltarank.analysis.tools.mitigate`).
"""

from __future__ import annotations

from typing import Any

import click

from deltarank.analysis.results.columns import MATRICES
from deltarank.analysis.tools.intruders import DEFAULT_EPSILON, DEFAULT_TOP_K, IntruderResult
from deltarank.analysis.tools.mitigate import DEFAULT_LAMBDA
from deltarank.cli.options import (
    STDOUT,
    analysis_options,
    check_figure_path,
    check_new_file,
    dry_run_option,
    echo,
    fetch_missing,
    figure_option,
    output_option,
    quiet_option,
    save_figure_file,
)
from deltarank.cli.references import base_of_runs
from deltarank.errors import OptionError
from deltarank.io.atomic import check_output_dir, refuse_overlap
from deltarank.io.progress import Progress


@click.command()
@click.argument("base", metavar="[BASE]", type=click.Path(path_type=str))
@click.argument("tuned", metavar="TUNED", required=False, type=click.Path(path_type=str))
@output_option(
    "Result JSON file (- for stdout); with --mitigate, the directory to write.", default="intruders.json"
)
@click.option(
    "--top-k",
    type=click.IntRange(min=1),
    default=DEFAULT_TOP_K,
    show_default=True,
    metavar="N",
    help="Top singular vectors of W' tested.",
)
@click.option(
    "--epsilon",
    type=click.FloatRange(0, 1, min_open=True),
    default=DEFAULT_EPSILON,
    show_default=True,
    metavar="X",
    help="Cosine threshold ε: a top left singular vector of W' is an intruder when its |cos| with every left "
    "singular vector of W is below ε (the counts at ε = 0.1 … 0.9 are stored too).",
)
@click.option(
    "--mitigate",
    "lam",
    type=float,
    default=None,
    metavar="λ",
    help=f"Write TUNED to -o DIR with each intruder's σ scaled by λ ≥ 0 (peft's reduce_intruder_dimension; "
    f"its default is {DEFAULT_LAMBDA}): a checkpoint for a dense TUNED, a LoRA adapter for a LoRA adapter.",
)
@analysis_options
@figure_option
@quiet_option
@dry_run_option
def intruders(
    base: str,
    tuned: str | None,
    output: str,
    force: bool,
    top_k: int,
    epsilon: float,
    lam: float | None,
    figure: str | None,
    quiet: bool,
    download: bool,
    dry_run: bool,
    **options: Any,
) -> None:
    """Intruder dimensions: top-k singular vectors of TUNED's weights far (|cos| < ε) from all of BASE's.

    TUNED is a checkpoint, a PEFT LoRA/DoRA adapter directory (merged in the compute dtype) or a `deltarank
    train` output; `deltarank intruders RUN` takes BASE from the run's run.json. The counts for
    ε = 0.1 … 0.9 are stored too.

    `--mitigate λ -o DIR` writes instead TUNED with each intruder direction's singular value scaled by λ:
    W' = W_merged + (λ − 1)·Σ_{intruders} σ_i u_i v_iᵀ over the SVD of W_merged = BASE + ΔW (peft's
    reduce_intruder_dimension). A dense TUNED gives a safetensors checkpoint (other tensors, config and
    tokenizer copied); a LoRA adapter gives a LoRA adapter re-factorised at its rank (ΔW'/s = B'A' by a
    rank-r SVD, as peft does); any other adapter with a ΔW gives the merged, mitigated model as a copy of a
    safetensors BASE (QLoRA and adapters with modules_to_save are refused).
    """
    from deltarank.analysis.tools.intruders import intruders as run_intruders

    if tuned is None:  # a train output alone: BASE is the one its run.json records
        tuned = base
        base, line = base_of_runs("intruders", [tuned], "BASE TUNED")
        echo(line, quiet, to_stdout=output != STDOUT)
    if dry_run:  # headers only: nothing is downloaded, computed or written
        from deltarank.analysis.tools.preview import preview

        click.echo(preview(base, [tuned], command="intruders", **options).to_text())
        return
    if lam is not None:
        mitigate(base, tuned, output, lam, top_k, epsilon, force, figure, quiet, download, options)
        return
    to_stdout = output == STDOUT
    inputs = [base, tuned]
    if not to_stdout:
        refuse_overlap(output, inputs)
        check_new_file(output, force)
    if figure:
        refuse_overlap(figure, inputs, option="--figure")
    check_figure_path(figure, force)
    fetch_missing(download, [base, tuned])
    with Progress("intruders", unit="matrices", quiet=quiet) as progress:
        result = run_intruders(base, tuned, top_k=top_k, epsilon=epsilon, progress=progress.hook, **options)
    if to_stdout:
        click.echo(result.to_json())
    else:
        result.to_json(output)
    echo(format_table(result), quiet, not to_stdout)
    if figure:
        from deltarank.figures.subspace import plot_intruders_by_layer

        save_figure_file(plot_intruders_by_layer([result]), figure)
    echo(
        f"Wrote {'stdout' if to_stdout else output}" + (f" and {figure}" if figure else ""),
        quiet,
        not to_stdout,
    )


def mitigate(
    base: str,
    tuned: str,
    output: str,
    lam: float,
    top_k: int,
    epsilon: float,
    force: bool,
    figure: str | None,
    quiet: bool,
    download: bool,
    options: dict[str, Any],
) -> None:
    """`--mitigate λ -o DIR`: every option checked before anything is read or written."""
    from click.core import ParameterSource

    from deltarank.analysis.tools.mitigate import check_lambda
    from deltarank.analysis.tools.mitigate import mitigate as run_mitigate

    check_lambda(lam)
    if click.get_current_context().get_parameter_source("output") is not ParameterSource.COMMANDLINE:
        raise OptionError("--mitigate needs -o DIR, the directory to write the mitigated weights to")
    if output == STDOUT:
        raise OptionError("--mitigate writes a directory: -o - (stdout) cannot hold it")
    if figure:
        raise OptionError("--figure does not apply with --mitigate (plot the intruders result instead)")
    refuse_overlap(output, [base, tuned])  # --force replaces the directory: never an input
    check_output_dir(output, force)
    fetch_missing(download, [base, tuned])
    with Progress("mitigate", unit="matrices", quiet=quiet) as progress:
        result = run_mitigate(
            base,
            tuned,
            output,
            lam=lam,
            top_k=top_k,
            epsilon=epsilon,
            overwrite=force,
            progress=progress.hook,
            **options,
        )
    echo(format_table(result), quiet)
    echo(f"Wrote {output}: {result.total()} intruder directions with σ scaled by λ = {lam:g}", quiet)


def format_table(result: IntruderResult) -> str:
    """Per module type: matrices, intruders at ε (total and max per matrix)."""
    header = f"{'module':<14}{MATRICES:>9}{'intruders':>11}{'max':>6}"
    lines = [header, "-" * len(header)]
    groups: dict[str, list[int]] = {}
    for m in result.matrices:
        groups.setdefault(m.module, []).append(m.count)
    for module, counts in groups.items():
        lines.append(f"{module:<14}{len(counts):>9}{sum(counts):>11}{max(counts):>6}")
    sweep = ", ".join(f"{e:g}: {result.total(e)}" for e in result.epsilons)
    lines.append(f"{result.total()} intruders among the top {result.top_k} at ε = {result.epsilon:g}")
    lines.append(f"total by ε: {sweep}")
    return "\n".join(lines)
