"""`deltarank similarity BASE TUNED_A TUNED_B [TUNED ...]` (or `similarity RUN_A RUN_B`): subspace similarity
φ(i, j) of two deltas (LoRA paper §7), and the merge geometry of n ≥ 3 (overlap, TIES sign conflicts, DARE)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import click
from click.core import ParameterSource

from deltarank.analysis.results.columns import MATRICES
from deltarank.analysis.results.merge import MergeGeometry
from deltarank.analysis.tools.merge import (
    DEFAULT_DARE_DROPS,
    DEFAULT_DENSITY,
    DEFAULT_MERGE_K,
    DEFAULT_SEED,
    MergeSettings,
    check_merge,
)
from deltarank.analysis.tools.similarity import (
    DEFAULT_TOP,
    SIDES,
    SimilarityResult,
    check_tops,
    pairwise_mean,
    present_mean,
)
from deltarank.cli.options import (
    STDOUT,
    CheckedFloatRange,
    CheckedIntRange,
    analysis_options,
    check_figure_path,
    check_new_file,
    dry_run_option,
    echo,
    fetch_missing,
    figure_option,
    output_option,
    parse_numbers,
    parse_sizes,
    quiet_option,
    save_figure_file,
)
from deltarank.cli.references import base_of_runs
from deltarank.errors import OptionError
from deltarank.io.atomic import refuse_overlap
from deltarank.io.progress import Progress

if TYPE_CHECKING:
    from deltarank.analysis.tools.memory import MemoryEstimate, PreviewPair

TABLE_SIZES = (1, 4, 16, 64)
MERGE_OPTIONS = ("merge_k", "density", "dare_drops", "seed")  # given with two TUNED, they imply --merge
USAGE = "[BASE] TUNED_A TUNED_B [TUNED ...]"


@click.command()
@click.argument("paths", metavar=USAGE, nargs=-1, type=click.Path(path_type=str))
@output_option("Result JSON file (- for stdout).", default="similarity.json", metavar="FILE")
@click.option(
    "--sizes",
    default=",".join(str(t) for t in DEFAULT_TOP),
    show_default=True,
    metavar="LIST",
    help="Subspace sizes i, j of the φ grid, comma-separated (clipped per matrix).",
)
@click.option("--side", type=click.Choice(SIDES), default="left", show_default=True, help="Singular vectors.")
@click.option(
    "--merge",
    is_flag=True,
    help="Also measure the merge geometry with two TUNED (always measured with three or more; implied by "
    "--merge-k, --density, --dare-drops or --seed).",
)
@click.option(
    "--merge-k",
    type=CheckedIntRange(min=1),
    default=DEFAULT_MERGE_K,
    show_default=True,
    metavar="N",
    help="Subspace size k of the n × n overlap φ(k, k) (clipped per matrix to min(m, n) and to the vectors "
    "every ΔW has).",
)
@click.option(
    "--density",
    type=CheckedFloatRange(0, 1, min_open=True),
    default=DEFAULT_DENSITY,
    show_default=True,
    metavar="X",
    help="Share of each ΔW's entries TIES's trim keeps (largest |Δw|), in (0, 1], for the sign conflicts.",
)
@click.option(
    "--dare-drops",
    default=",".join(f"{p:g}" for p in DEFAULT_DARE_DROPS),
    show_default=True,
    metavar="LIST",
    help="DARE drop rates p, comma-separated, each in [0, 1).",
)
@click.option(
    "--seed", type=int, default=DEFAULT_SEED, show_default=True, metavar="N", help="Seed of the DARE masks."
)
@analysis_options
@figure_option
@quiet_option
@dry_run_option
def similarity(
    paths: tuple[str, ...],
    output: str,
    force: bool,
    sizes: str,
    side: str,
    merge: bool,
    merge_k: int,
    density: float,
    dare_drops: str,
    seed: int,
    figure: str | None,
    quiet: bool,
    download: bool,
    dry_run: bool,
    **options: Any,
) -> None:
    """Subspace similarity φ(i, j) = ‖U_Aᵢᵀ U_Bⱼ‖_F² / min(i, j) between the top singular vectors of
    ΔW_A = TUNED_A − BASE and ΔW_B = TUNED_B − BASE, per matrix (e.g. full fine-tuning against LoRA).

    \b
    With three or more TUNED (or --merge), also the merge geometry of all n deltas, per matrix and as
    medians per module type:
      the n × n overlap φ(k, k) of their top-k singular vectors (k = --merge-k);
      TIES's sign conflicts: each ΔW trimmed to its top --density share of entries by |Δw|, the share of
      opposite signs among the entries two of them keep, and among those kept by two or more, the share
      whose signs are not all one (n-way);
      DARE's relative error ‖DARE(ΔW) − ΔW‖_F / ‖ΔW‖_F per delta and for the merged sum, at each
      --dare-drops rate p (entries dropped with probability p, the rest scaled by 1/(1 − p); seeded by
      --seed; E of its square: p/(1 − p)).

    Each TUNED is a checkpoint, a PEFT LoRA/DoRA adapter directory or a `deltarank train` output.
    `deltarank similarity RUN_A RUN_B` compares two train outputs on the base both their run.json record;
    with three or more arguments the first is BASE. --figure draws the φ heatmaps with two TUNED, the merge
    heatmaps with more (`deltarank plot --kind merge` draws those of any result that has them).
    """
    from deltarank.analysis.tools.similarity import similarity as run_similarity

    to_stdout = output == STDOUT
    base, tuned = _arguments(paths, quiet, to_stdout)
    top = parse_sizes(sizes)
    settings = check_merge(MergeSettings(merge_k, density, parse_drops(dare_drops), seed))  # checked always
    measured = merge or len(tuned) > 2 or _given(MERGE_OPTIONS)
    if dry_run:  # headers only: nothing is downloaded, computed or written
        from deltarank.analysis.tools.preview import preview

        check_tops(top)
        plan = preview(base, list(tuned), command="similarity", **options)
        if measured:  # the n deltas of one matrix held at once, and the merge measures' working arrays
            plan = replace(plan, memory=merge_memory(plan.pairs, plan.precision, len(tuned), settings))
        click.echo(plan.to_text())
        return
    inputs = [base, *tuned]
    if not to_stdout:
        refuse_overlap(output, inputs)
        check_new_file(output, force)
    if figure:
        refuse_overlap(figure, inputs, option="--figure")
    check_figure_path(figure, force)
    fetch_missing(download, inputs)
    with Progress("similarity", unit="matrices", quiet=quiet) as progress:
        result = run_similarity(
            base,
            *tuned,
            top=top,
            side=side,
            merge=settings if measured else None,
            progress=progress.hook,
            **options,
        )
    if to_stdout:
        click.echo(result.to_json())
    else:
        result.to_json(output)
    echo(format_table(result), quiet, not to_stdout)
    if result.merge is not None:
        echo(format_merge_table(result.merge), quiet, not to_stdout)
    if figure:
        save_figure_file(_figure(result), figure)
    echo(
        f"Wrote {'stdout' if to_stdout else output}" + (f" and {figure}" if figure else ""),
        quiet,
        not to_stdout,
    )


def merge_memory(
    pairs: Sequence[PreviewPair], precision: str, deltas: int, settings: MergeSettings
) -> MemoryEstimate:
    """The dry run's memory estimate with the merge geometry of `deltas` deltas at `settings`' drop rates."""
    from deltarank.analysis.engine.compute import resolve_precision
    from deltarank.analysis.tools.memory import estimate_memory

    return estimate_memory(
        "similarity",
        pairs,
        resolve_precision(precision),
        "svd",
        deltas=deltas,
        merge_drops=len(settings.drops),
    )


def format_table(result: SimilarityResult) -> str:
    """Per module type: matrices and mean φ(i, i) over layers for a few sizes i."""
    sizes = [i for i in TABLE_SIZES if result.module_means(i)]
    header = f"{'module':<14}{MATRICES:>9}" + "".join(f"{f'φ({i},{i})':>11}" for i in sizes)
    lines = [header, "-" * len(header)]
    means = {i: result.module_means(i) for i in sizes}
    for module, items in result.by_module().items():
        cells = "".join(f"{means[i][module]:>11.3f}" if module in means[i] else f"{'-':>11}" for i in sizes)
        lines.append(f"{module:<14}{len(items):>9}{cells}")
    lines.append(f"{len(result.matrices)} matrices; {result.side} singular vectors; means over layers")
    return "\n".join(lines)


def _arguments(paths: tuple[str, ...], quiet: bool, to_stdout: bool) -> tuple[str, tuple[str, ...]]:
    """BASE and the TUNED: two arguments are train outputs (BASE from their run.json), more are BASE first.

    Raises:
        OptionError: fewer than two arguments.
    """
    if len(paths) < 2:
        raise OptionError(
            f"similarity compares two or more deltas: `deltarank similarity {USAGE}` (BASE left out only for "
            f"two `deltarank train` outputs), got {len(paths)} argument{'s' if len(paths) != 1 else ''}"
        )
    if len(paths) > 2:
        return paths[0], paths[1:]
    base, line = base_of_runs("similarity", list(paths), "BASE TUNED_A TUNED_B")
    echo(line, quiet, to_stdout=not to_stdout)
    return base, paths


def _given(names: tuple[str, ...]) -> bool:
    """Whether any of these options was given on the command line (not left at its default)."""
    context = click.get_current_context()
    return any(context.get_parameter_source(name) not in (None, ParameterSource.DEFAULT) for name in names)


def parse_drops(text: str) -> tuple[float, ...]:
    """`--dare-drops 0.5,0.9` -> (0.5, 0.9); empty -> () (no DARE error measured)."""
    return parse_numbers(text, "--dare-drops", "0.5,0.9")


def _figure(result: SimilarityResult) -> Any:
    """The φ heatmaps of A and B with two TUNED, the merge heatmaps with more."""
    if result.merge is not None and len(result.merge.tuned) > 2:
        from deltarank.figures.merge import plot_merge_geometry

        return plot_merge_geometry(result)
    from deltarank.figures.subspace import plot_similarity_heatmaps

    return plot_similarity_heatmaps(result)


def format_merge_table(merge: MergeGeometry) -> str:
    """Per module type, medians over its matrices: the mean over pairs of the overlap φ(k, k) and of the sign
    conflict, the n-way conflict, and per drop rate the mean over deltas of DARE's error and the merged one."""
    drops = [f"{p:g}" for p in merge.dare_drops]
    header = f"{'module':<14}{MATRICES:>9}{'k':>5}{'overlap':>9}{'conflict':>10}{'n-way':>8}"
    header += "".join(f"{f'DARE {p}':>10}{f'sum {p}':>10}" for p in drops)
    lines = [header, "-" * len(header)]
    for module in merge.modules:
        cells = [_cell(pairwise_mean(module.overlap)), _cell(pairwise_mean(module.sign_conflict), 10)]
        cells.append(_cell(module.sign_conflict_nway, 8))
        for row, summed in zip(module.dare_error, module.dare_merged_error, strict=True):
            cells += [_cell(present_mean(row), 10), _cell(summed, 10)]
        lines.append(f"{module.module:<14}{module.matrices:>9}{module.k:>5g}" + "".join(cells))
    lines.append(
        f"{len(merge.tuned)} deltas; medians over layers; overlap φ(k, k) and conflict (TIES trim at density "
        f"{merge.density:g}) are means over pairs; DARE: mean relative error per delta (E of its square "
        "p/(1 − p)), sum: of the merged sum"
    )
    return "\n".join(lines)


def _cell(value: float | None, width: int = 9) -> str:
    return f"{'-' if value is None else f'{value:.3f}':>{width}}"
