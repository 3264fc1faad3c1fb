"""`deltarank similarity BASE TUNED_A TUNED_B` (or `similarity RUN_A RUN_B`): subspace similarity φ(i, j) of two deltas (LoRA paper §7)."""

from __future__ import annotations

from typing import Any

import click

from deltarank.analysis.tools.similarity import DEFAULT_TOP, SIDES, SimilarityResult, check_tops
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
    parse_sizes,
    quiet_option,
    save_figure_file,
)
from deltarank.cli.references import base_of_runs
from deltarank.io.atomic import refuse_overlap
from deltarank.io.progress import Progress

TABLE_SIZES = (1, 4, 16, 64)


@click.command()
@click.argument("base", metavar="[BASE]", type=click.Path(path_type=str))
@click.argument("tuned_a", type=click.Path(path_type=str))
@click.argument("tuned_b", metavar="TUNED_B", required=False, type=click.Path(path_type=str))
@output_option("Result JSON file (- for stdout).", default="similarity.json")
@click.option(
    "--sizes",
    default=",".join(str(t) for t in DEFAULT_TOP),
    show_default=True,
    help="Subspace sizes i, j of the φ grid, comma-separated (clipped per matrix).",
)
@click.option("--side", type=click.Choice(SIDES), default="left", show_default=True, help="Singular vectors.")
@analysis_options
@figure_option
@quiet_option
@dry_run_option
def similarity(
    base: str,
    tuned_a: str,
    tuned_b: str | None,
    output: str,
    force: bool,
    sizes: str,
    side: str,
    figure: str | None,
    quiet: bool,
    download: bool,
    dry_run: bool,
    **options: Any,
) -> None:
    """Subspace similarity φ(i, j) = ‖U_Aᵢᵀ U_Bⱼ‖_F² / min(i, j) between the top singular vectors of
    ΔW_A = TUNED_A − BASE and ΔW_B = TUNED_B − BASE, per matrix (e.g. full fine-tuning against LoRA).

    Each TUNED is a checkpoint, a PEFT LoRA/DoRA adapter directory or a `deltarank train` output.
    `deltarank similarity RUN_A RUN_B` compares two train outputs on the base both their run.json record.
    """
    from deltarank.analysis.tools.similarity import similarity as run_similarity

    if tuned_b is None:  # two train outputs: BASE is the one both run.json record
        tuned_a, tuned_b = base, tuned_a
        base, line = base_of_runs("similarity", [tuned_a, tuned_b], "BASE TUNED_A TUNED_B")
        echo(line, quiet, to_stdout=output != STDOUT)
    top = parse_sizes(sizes)
    if dry_run:  # headers only: nothing is downloaded, computed or written
        from deltarank.analysis.tools.preview import preview

        check_tops(top)
        click.echo(preview(base, [tuned_a, tuned_b], command="similarity", **options).to_text())
        return
    to_stdout = output == STDOUT
    inputs = [base, tuned_a, tuned_b]
    if not to_stdout:
        refuse_overlap(output, inputs)
        check_new_file(output, force)
    if figure:
        refuse_overlap(figure, inputs, option="--figure")
    check_figure_path(figure, force)
    fetch_missing(download, [base, tuned_a, tuned_b])
    with Progress("similarity", unit="matrices", quiet=quiet) as progress:
        result = run_similarity(base, tuned_a, tuned_b, top=top, side=side, progress=progress.hook, **options)
    if to_stdout:
        click.echo(result.to_json())
    else:
        result.to_json(output)
    echo(format_table(result), quiet, not to_stdout)
    if figure:
        from deltarank.figures.subspace import plot_similarity_heatmaps

        save_figure_file(plot_similarity_heatmaps(result), figure)
    echo(
        f"Wrote {'stdout' if to_stdout else output}" + (f" and {figure}" if figure else ""),
        quiet,
        not to_stdout,
    )


def format_table(result: SimilarityResult) -> str:
    """Per module type: mean φ(i, i) over layers for a few sizes i."""
    sizes = [i for i in TABLE_SIZES if result.module_means(i)]
    header = f"{'module':<14}{'n':>4}" + "".join(f"{f'φ({i},{i})':>11}" for i in sizes)
    lines = [header, "-" * len(header)]
    means = {i: result.module_means(i) for i in sizes}
    for module, items in result.by_module().items():
        cells = "".join(f"{means[i][module]:>11.3f}" if module in means[i] else f"{'-':>11}" for i in sizes)
        lines.append(f"{module:<14}{len(items):>4}{cells}")
    lines.append(f"{len(result.matrices)} matrices; {result.side} singular vectors; means over layers")
    return "\n".join(lines)
