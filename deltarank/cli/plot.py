"""`deltarank plot`: figures from result files (never decomposes, never loads a model)."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from deltarank.cli.options import output_option

KIND_HELP = (
    "spectrum, ranks, ratio (the headline), steps, learning, intruders, similarity, energy, sparsity, "
    "placement, merge, recommendation, or all (every kind the inputs allow)."
)


@click.command()
@click.argument("results", nargs=-1, type=click.Path(path_type=Path))
@output_option("Output directory (created when missing).", required=True)
@click.option(
    "--kind",
    "kinds",
    multiple=True,
    default=("all",),
    show_default=True,
    metavar="LIST",
    help=f"Figure(s) to draw, repeatable or comma-separated: {KIND_HELP}",
)
@click.option(
    "--format",
    "formats",
    default="pdf,png",
    show_default=True,
    metavar="LIST",
    help="Comma-separated file formats: pdf, png, svg.",
)
@click.option(
    "--label",
    "labels",
    multiple=True,
    metavar="LABEL",
    help="Name per result file, in order (default: from the tuned path): legends, and the file names of "
    "per-file figures. Checkpoint spectra with the same label form one run in the steps figure.",
)
@click.option(
    "--summary",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The reproduction's summary.json, for the learning-vs-forgetting figure.",
)
@click.option(
    "--lora-rank",
    type=click.IntRange(min=1),
    metavar="N",
    help="LoRA rank r to compare against when no LoRA result is given.",
)
@click.option(
    "--x-axis",
    type=click.Choice(["step", "tokens"]),
    default="step",
    show_default=True,
    help="Training axis of the steps figure (tokens need a train_log.jsonl in the run directory).",
)
def plot(
    results: tuple[Path, ...],
    output: str,
    force: bool,
    kinds: tuple[str, ...],
    formats: str,
    labels: tuple[str, ...],
    summary: Path | None,
    lora_rank: int | None,
    x_axis: str,
) -> None:
    """Draw paper figures from RESULTS into a directory: result files of spectrum, intruders, similarity,
    extract, placement or recommend (an adapter directory written by extract, an output directory of placement
    or recommend work too), told apart by their schema; each file goes to the figures of its family. A train_log.jsonl of `deltarank train --track-rank N` (or its run directory)
    goes to the steps figure.

    \b
    Files written (per format):
      spectra              normalised singular values and cumulative energy, per module type (spectrum)
      ranks_by_layer       r0.9 against layer, one panel per module type (spectrum)
      headline             full fine-tuning r0.9 next to the LoRA rank, ratio on the bars (spectrum)
      rank_over_training   median r0.9 against step, from checkpoint results (.../checkpoint-N) (spectrum),
                           or from the train_log.jsonl (or run directory) of `train --track-rank N`
      learning_forgetting  learning vs forgetting with the Pareto front (needs --summary)
      intruders_by_layer   intruder count against layer, one line per run (intruders)
      similarity           φ(i, j) heatmaps per module type (similarity; several: similarity-LABEL)
      merge_geometry       n × n overlap φ(k, k) and TIES sign-conflict heatmaps per module type (a
                           similarity result of three or more TUNED, or --merge; several: merge_geometry-LABEL)
      retained_energy      energy of ΔW kept against rank k (extract; several: retained_energy-LABEL)
      sparsity             entries changed beyond --sparsity-atol against rank ÷ min(m, n), one point
                           per module type and run: sparse vs low-rank (spectrum)
      placement            share of ‖ΔW‖² in W₀'s top-k and bottom-k singular directions against layer,
                           per module type, beside chance k/d (placement; several: placement-LABEL)
      recommendation       share of ‖ΔW‖² kept against rank per matrix, the recommended ranks marked,
                           per module type (recommend; several: recommendation-LABEL)
      study_*              a study.json of `deltarank study`: every figure its runs allow (see its report),
                           and the spectrum figures of the spectra it kept (learning_forgetting too for a
                           reproduction, from the summary.json beside it)
    """
    import matplotlib

    matplotlib.use("Agg")  # files only; never a window
    logging.getLogger("fontTools").setLevel(logging.WARNING)  # its per-font INFO lines drown `-v` output

    from deltarank.analysis.results import read_result
    from deltarank.errors import OptionError
    from deltarank.figures.learning import load_summary
    from deltarank.figures.render import render_figures
    from deltarank.figures.study import is_study_file, read_study, render_study_figures
    from deltarank.figures.training import is_tracked_log, read_tracked_ranks
    from deltarank.study.report.figures import render_run_figures
    from deltarank.study.report.summary import SUMMARY_JSON

    out_dir = Path(output)
    studies = [path for path in results if is_study_file(path)]
    for path in studies:  # a study.json: its own figures and those of the spectra it kept (deltarank study)
        document = read_study(path)
        kept = path.parent / SUMMARY_JSON
        summary_of = (
            load_summary(kept) if document.get("study", {}).get("file", {}).get("reproduce") else None
        )
        drawn = render_study_figures(document, out_dir, formats.split(","), overwrite=force)
        drawn += render_run_figures(document, path.parent, out_dir, summary_of, formats.split(","), force)
        for figure_file in drawn:
            click.echo(str(figure_file))
    results = tuple(path for path in results if path not in studies)
    if studies and not results and summary is None:
        return
    if labels and len(labels) != len(results):
        raise OptionError(f"got {len(labels)} --label values for {len(results)} inputs; give one each")
    logs = [is_tracked_log(path) for path in results]
    tracked = [
        read_tracked_ranks(path, labels[i] if labels else None) for i, path in enumerate(results) if logs[i]
    ]
    loaded = [read_result(path) for path, log in zip(results, logs, strict=True) if not log]
    result_labels = [label for label, log in zip(labels, logs, strict=True) if not log] if labels else []
    written = render_figures(
        loaded,
        out_dir,
        kinds=kinds,
        formats=formats,
        labels=result_labels or None,
        tracked=tracked,
        summary=summary,
        lora_rank=lora_rank,
        x_axis=x_axis,
        overwrite=force,
    )
    for path in written:
        click.echo(str(path))
