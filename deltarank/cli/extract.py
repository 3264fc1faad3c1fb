"""`deltarank extract BASE TUNED --rank R | --energy τ -o ADAPTER_DIR`: ΔW's best low-rank LoRA adapter."""

from __future__ import annotations

from typing import Any

import click

from deltarank.analysis.results.columns import MATRICES
from deltarank.analysis.tools.extract import SAVE_DTYPES, ExtractResult, check_target
from deltarank.cli.options import (
    CheckedFloatRange,
    CheckedIntRange,
    analysis_options,
    check_figure_path,
    dry_run_option,
    echo,
    fetch_missing,
    figure_option,
    output_option,
    quiet_option,
    save_figure_file,
)
from deltarank.cli.references import base_of_runs
from deltarank.io.atomic import check_output_dir, refuse_overlap
from deltarank.io.progress import Progress


@click.command()
@click.argument("base", metavar="[BASE]", type=click.Path(path_type=str))
@click.argument("tuned", metavar="TUNED", required=False, type=click.Path(path_type=str))
@output_option("Adapter directory to write.", required=True)
@click.option(
    "--lora-rank",
    "rank",
    type=CheckedIntRange(min=1),
    default=None,
    metavar="N",
    help="One rank R for every matrix (clipped to its size); give it or --energy.",
)
@click.option(
    "--energy",
    type=CheckedFloatRange(0, 1, min_open=True),
    default=None,
    metavar="X",
    help="Per-matrix rank: the smallest keeping this share τ of ΔW's energy Σσ²; give it or --lora-rank.",
)
@click.option(
    "--dtype",
    type=click.Choice(list(SAVE_DTYPES)),
    default="float32",
    show_default=True,
    help="dtype of the adapter's saved A and B (computed in --precision, cast when written).",
)
@click.option(
    "--base-model-name",
    default=None,
    metavar="NAME",
    help="base_model_name_or_path to record in adapter_config.json (default: BASE).",
)
@click.option(
    "--embeddings",
    is_flag=True,
    help="Also extract the input embedding (embed_tokens, as peft's nn.Embedding LoRA) and the LM head "
    "(lm_head), like mergekit's --embed-lora; refused when they are tied.",
)
@analysis_options
@figure_option
@quiet_option
@dry_run_option
def extract(
    base: str,
    tuned: str | None,
    output: str,
    rank: int | None,
    energy: float | None,
    dtype: str,
    base_model_name: str | None,
    embeddings: bool,
    force: bool,
    figure: str | None,
    quiet: bool,
    download: bool,
    dry_run: bool,
    **options: Any,
) -> None:
    """Write the best rank-k approximation of each ΔW = TUNED − BASE as a PEFT LoRA adapter.

    B = U_k Σ_k^½, A = Σ_k^½ V_kᵀ, α = r (scale 1). `PeftModel.from_pretrained(base_model, OUTPUT)` loads it;
    OUTPUT/deltarank_extract.json records each matrix's rank and retained energy Σ_{i≤k}σ_i²/Σσ_i².
    `deltarank extract RUN ...` takes BASE from the run.json of a `deltarank train` output.
    """
    from deltarank.analysis.tools.extract import extract as run_extract

    if tuned is None:  # a train output alone: BASE is the one its run.json records
        tuned = base
        base, line = base_of_runs("extract", [tuned], "BASE TUNED")
        echo(line, quiet)
    check_target(rank, energy, dtype)
    if dry_run:  # headers only: nothing is downloaded, computed or written
        from deltarank.analysis.tools.preview import preview

        click.echo(preview(base, [tuned], command="extract", embeddings=embeddings, **options).to_text())
        return
    refuse_overlap(output, [base, tuned])  # --force replaces the directory: never an input
    check_output_dir(output, force)
    if figure:
        refuse_overlap(figure, [base, tuned], option="--figure")
    check_figure_path(figure, force)
    fetch_missing(download, [base, tuned])
    with Progress("extract", unit="matrices", quiet=quiet) as progress:
        result = run_extract(
            base,
            tuned,
            output,
            rank=rank,
            energy=energy,
            dtype=dtype,
            base_model_name_or_path=base_model_name,
            overwrite=force,
            embeddings=embeddings,
            progress=progress.hook,
            **options,
        )
    echo(format_table(result), quiet)
    if figure:
        from deltarank.figures.subspace import plot_retained_energy

        save_figure_file(plot_retained_energy(result), figure)
    echo(f"Wrote adapter {output} (r = {result.r})" + (f" and {figure}" if figure else ""), quiet)


def format_table(result: ExtractResult) -> str:
    """Per module type: matrices, rank range and mean retained energy."""
    header = f"{'module':<14}{MATRICES:>9}{'rank':>11}{'energy kept':>13}"
    lines = [header, "-" * len(header)]
    energy = result.module_energy()
    groups: dict[str, list[int]] = {}
    for m in result.matrices:
        groups.setdefault(m.module, []).append(m.rank)
    for module, ranks in groups.items():
        span = f"{min(ranks)}" if min(ranks) == max(ranks) else f"{min(ranks)}-{max(ranks)}"
        lines.append(f"{module:<14}{len(ranks):>9}{span:>11}{energy[module]:>13.3f}")
    lines.append(f"{len(result.matrices)} matrices, {len(result.skipped)} skipped")
    return "\n".join(lines)
