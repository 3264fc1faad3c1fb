"""`deltarank compare`: a terminal table per module type across runs, for results of one family."""

from __future__ import annotations

from pathlib import Path

import click

from deltarank.cli.options import check_new_file, output_option


@click.command()
@click.argument("results", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--label",
    "labels",
    multiple=True,
    metavar="LABEL",
    help="Column name per result file, in order (default: from the tuned path).",
)
@click.option(
    "--lora-rank",
    type=click.IntRange(min=1),
    metavar="N",
    help="Spectra: divide each run's median r0.9 by this LoRA rank instead of by the first run's.",
)
@output_option("Also write the table as CSV (atomically) to this file.", metavar="FILE")
def compare(
    results: tuple[Path, ...], labels: tuple[str, ...], lora_rank: int | None, output: str | None, force: bool
) -> None:
    """Compare result files of one family (told apart by their schema), per module type.

    \b
    spectrum    median energy_90 (r0.9) and noise-floor rank per run, and the ratio of each
                run's r0.9 to the first run's (or to --lora-rank R); `width` is min(rows, cols),
                `gauss_e90` the r0.9 of a Gaussian matrix of the same shape; the medians of the
                sparsity profile per run: shares of entries exactly unchanged (`zero`), within
                the run's --sparsity-atol (`atol`), within half an ulp of the base weight
                (`ulp/2`), and numerical rank ÷ min(rows, cols) (`rank/width`)
    intruders   intruders at each run's ε (sum over the layers) and the most in one matrix
    similarity  mean φ(i, i) over the layers per file, for i = 1, 4, 16, 64 where stored
    extract     median rank written and mean retained energy per run (an adapter directory
                written by extract works too)
    placement   medians at k = r0.9 of ΔW of the shares of ‖ΔW‖² in W₀'s top-k and bottom-k
                left (L) and right (R) singular directions, their chance k/m and k/n, the
                mean cos² of the left principal angles and the relative change of σ₁ (an
                output directory of placement works too)
    recommend   per run the recommended rank range, the LoRA parameters it costs and the
                share of Σ‖ΔW‖² it keeps (an output directory of recommend works too)

    The column `matrices` of the other families counts the row's matrices. The row `all` takes every
    matrix.
    """
    from deltarank.analysis.results import (
        ExtractResult,
        IntruderResult,
        PlacementResult,
        RecommendationResult,
        SimilarityResult,
        SpectrumResult,
        read_result,
    )
    from deltarank.errors import DeltarankError, OptionError
    from deltarank.figures import tables
    from deltarank.io.atomic import refuse_overlap, write_atomic

    if output is not None:
        refuse_overlap(output, results)  # --force never replaces a result file being compared
        check_new_file(output, force)
    loaded = [read_result(path) for path in results]
    schemas = list(dict.fromkeys(result.SCHEMA for result in loaded))
    if len(schemas) > 1:
        raise DeltarankError(f"compare reads one result family at a time; got {' and '.join(schemas)} files")
    if lora_rank is not None and not isinstance(loaded[0], SpectrumResult):
        raise OptionError(f"--lora-rank applies to {SpectrumResult.SCHEMA} results only")
    names = list(labels) or None
    if all(isinstance(r, SpectrumResult) for r in loaded):
        table = tables.compare_table(
            [r for r in loaded if isinstance(r, SpectrumResult)], names, lora_rank=lora_rank
        )
    elif all(isinstance(r, IntruderResult) for r in loaded):
        table = tables.intruder_table([r for r in loaded if isinstance(r, IntruderResult)], names)
    elif all(isinstance(r, SimilarityResult) for r in loaded):
        table = tables.similarity_table([r for r in loaded if isinstance(r, SimilarityResult)], names)
    elif all(isinstance(r, RecommendationResult) for r in loaded):
        from deltarank.figures.recommendation import recommendation_table

        table = recommendation_table([r for r in loaded if isinstance(r, RecommendationResult)], names)
    elif all(isinstance(r, PlacementResult) for r in loaded):
        table = tables.placement_table([r for r in loaded if isinstance(r, PlacementResult)], names)
    else:
        table = tables.extract_table([r for r in loaded if isinstance(r, ExtractResult)], names)
    click.echo(table.to_text(), nl=False)
    if output is not None:
        write_atomic(output, table.to_csv())
