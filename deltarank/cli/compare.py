"""`deltarank compare`: a terminal table of median ranks per module type across runs."""

from __future__ import annotations

from pathlib import Path

import click

from deltarank.cli.options import check_new_file, output_option


@click.command()
@click.argument("results", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--label",
    "labels",
    multiple=True,
    help="Column name per result file, in order (default: from the tuned path).",
)
@click.option(
    "--lora-rank",
    type=click.IntRange(min=1),
    help="Divide each run's median r0.9 by this LoRA rank instead of by the first run's.",
)
@output_option("Also write the table as CSV (atomically) to this file.")
def compare(
    results: tuple[Path, ...], labels: tuple[str, ...], lora_rank: int | None, output: str | None, force: bool
) -> None:
    """Compare result files: per module type, median energy_90 (r0.9) and noise-floor rank per run, and
    the ratio of each run's r0.9 to the first run's (or to --lora-rank R).

    The row `all` takes the medians over every matrix; `n` is min(rows, cols), `gauss_e90` the r0.9 of a
    Gaussian matrix of the same shape.
    """
    from deltarank.analysis.results import SpectrumResult
    from deltarank.figures.tables import compare_table
    from deltarank.io.atomic import write_atomic

    if output is not None:
        check_new_file(output, force)
    loaded = [SpectrumResult.from_json(path) for path in results]
    table = compare_table(loaded, list(labels) or None, lora_rank=lora_rank)
    click.echo(table.to_text(), nl=False)
    if output is not None:
        write_atomic(output, table.to_csv())
