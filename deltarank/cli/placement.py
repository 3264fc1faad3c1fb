"""`deltarank placement BASE TUNED -o DIR` (or `placement RUN -o DIR`): where each ΔW lands among W₀'s singular
directions (top-k vs bottom-k shares beside chance, principal angles, relative change of W₀'s top σ)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from deltarank.analysis.results.columns import MATRICES
from deltarank.analysis.results.placement import MATCHED_KEY, RESULT_FILE, SIDES, PlacementResult
from deltarank.analysis.tools.placement import DEFAULT_SIGMA_TOP, check_sizes
from deltarank.cli.options import (
    analysis_options,
    echo,
    fetch_missing,
    output_option,
    parse_sizes,
    quiet_option,
)
from deltarank.cli.references import base_of_runs
from deltarank.errors import DeltarankError
from deltarank.io.atomic import atomic_directory, check_output_dir, refuse_overlap
from deltarank.io.progress import Progress

FIGURE_STEM = "placement"
SHOWN_SIGMA = 4  # relative changes of σ_1 … σ_4 in the terminal table (the file keeps --top-k of them)


@click.command()
@click.argument("base", metavar="[BASE]", type=click.Path(path_type=str))
@click.argument("tuned", metavar="TUNED", required=False, type=click.Path(path_type=str))
@output_option(
    f"Output directory: {RESULT_FILE} and the figure {FIGURE_STEM}.<format> (written whole or not at all).",
    default="placement",
)
@click.option(
    "--sizes",
    default=None,
    metavar="LIST",
    help="Subspace sizes k, comma-separated (e.g. 1,8,64), measured besides k = each ΔW's own r0.9 (clipped "
    "to min(m, n) per matrix).",
)
@click.option(
    "--top-k",
    type=click.IntRange(min=1),
    default=DEFAULT_SIGMA_TOP,
    show_default=True,
    metavar="N",
    help="W₀'s top singular values whose relative change (σ_i(W') − σ_i(W₀)) / σ_i(W₀) is recorded.",
)
@click.option(
    "--format",
    "formats",
    default="pdf,png",
    show_default=True,
    metavar="LIST",
    help="Figure file formats, comma-separated: pdf, png, svg.",
)
@analysis_options
@quiet_option
def placement(
    base: str,
    tuned: str | None,
    output: str,
    force: bool,
    sizes: str | None,
    top_k: int,
    formats: str,
    quiet: bool,
    download: bool,
    **options: Any,
) -> None:
    """Where ΔW = TUNED − BASE lands among BASE's singular directions, per weight matrix.

    \b
    For k = each ΔW's r0.9 (and every --sizes k):
      shares of ‖ΔW‖²_F in the span of W₀'s top-k and bottom-k left (‖U_kᵀ ΔW‖²/‖ΔW‖²) and right
      (‖ΔW V_k‖²/‖ΔW‖²) singular vectors, beside chance k/m and k/n: what a ΔW with no preferred
      direction gets in any k-dimensional subspace;
      principal angles between W₀'s and W''s top-k left and right subspaces (cosines; mean cos²,
      chance k/d);
    and the relative change of W₀'s top --top-k singular values.

    TUNED is a checkpoint, a PEFT adapter directory (merged as W₀ + ΔW in the compute dtype) or a `deltarank
    train` output; `deltarank placement RUN` takes BASE from the run's run.json. DIR receives placement.json
    and the figure (also `deltarank plot DIR --kind placement`).
    """
    import matplotlib

    matplotlib.use("Agg")  # files only; never a window
    from deltarank.analysis.tools.placement import placement as run_placement
    from deltarank.figures.save import parse_formats

    if tuned is None:  # a train output alone: BASE is the one its run.json records
        tuned = base
        base, line = base_of_runs("placement", [tuned], "BASE TUNED")
        echo(line, quiet)
    asked = check_sizes(parse_sizes(sizes), top_k)
    figure_formats = parse_formats(formats)
    refuse_overlap(output, [base, tuned])  # --force replaces the directory: never an input
    check_output_dir(output, force)
    fetch_missing(download, [base, tuned])
    with Progress("placement", unit="matrices", quiet=quiet) as progress:
        result = run_placement(base, tuned, sizes=asked, sigma_top=top_k, progress=progress.hook, **options)
    written, problem = write_placement(result, output, figure_formats, force)
    echo(format_table(result), quiet)
    if problem:
        click.echo(f"Warning: no figure: {problem}", err=True)
    echo(f"Wrote {', '.join(str(path) for path in written)}", quiet)


def write_placement(
    result: PlacementResult, out_dir: str | Path, formats: tuple[str, ...], overwrite: bool
) -> tuple[list[Path], str | None]:
    """DIR/placement.json and the figure DIR/placement.<format>, all or nothing (a temporary directory renamed
    into place); an existing DIR is replaced only with `overwrite`.

    Returns:
        The written paths, inside `out_dir`, and why the figure was left out (no matrix inside the transformer
        blocks with a non-zero ΔW to draw), else None.
    """
    from deltarank.figures.placement import plot_placement
    from deltarank.figures.save import save_figure

    try:
        figure, problem = plot_placement(result), None
    except DeltarankError as exc:  # the result is still worth keeping
        figure, problem = None, str(exc)
    with atomic_directory(out_dir, overwrite) as tmp:
        result.to_json(tmp / RESULT_FILE)
        names = [RESULT_FILE]
        if figure is not None:
            names += [path.name for path in save_figure(figure, tmp, FIGURE_STEM, formats)]
    return [Path(out_dir) / name for name in names], problem


def format_table(result: PlacementResult) -> str:
    """Per subspace size, per module type: medians over layers of each share beside its chance level, and of
    the mean cos² of the principal angles; then the medians of the relative σ changes."""
    blocks = [_size_table(result, key) for key in result.size_keys()]
    blocks.append(_sigma_table(result))
    total = len(result.matrices)
    blocks.append(
        f"{total} matrices on {result.device} ({result.precision}); medians over layers; share (chance k/d): "
        "a ΔW with no preferred direction puts k/d of its energy in any k of the d directions"
    )
    return "\n\n".join(blocks)


def _size_table(result: PlacementResult, key: str) -> str:
    """One subspace size: module, matrices, median k, then top/bottom share (chance) per side and mean cos² (chance)."""
    title = "k = r0.9 of ΔW" if key == MATCHED_KEY else f"k = {key.removeprefix('k')} (clipped to min(m, n))"
    header = f"{'module':<12}{MATRICES:>9}{'k':>7}"
    header += "".join(f"{name:>15}" for name in ("top-k L", "bottom-k L", "top-k R", "bottom-k R"))
    header += "".join(f"{name:>15}" for name in ("cos² L", "cos² R"))
    lines = [title, header, "-" * len(header)]
    for module in result.modules:
        row = module.subspaces.get(key)
        if row is None:
            continue
        k = row.get("k", {}).get("median")
        cells = [
            _share(row, f"{side}_{measure}", f"{side}_chance")
            for side in SIDES
            for measure in ("top", "bottom")
        ]
        cells += [_share(row, f"{side}_mean_cos2", f"{side}_chance") for side in SIDES]
        k_text = "-" if k is None else f"{k:g}"
        lines.append(
            f"{module.module:<12}{module.matrices:>9}{k_text:>7}" + "".join(f"{c:>15}" for c in cells)
        )
    return "\n".join(lines)


def _share(row: dict[str, dict[str, float]], name: str, chance: str) -> str:
    """`0.812 (0.031)`: a median share and the median chance level beside it; `-` when no matrix has it."""
    value, level = row.get(name), row.get(chance)
    if value is None or level is None:
        return "-"
    return f"{value['median']:.3f} ({level['median']:.3f})"


def _sigma_table(result: PlacementResult) -> str:
    """Median relative change of W₀'s top σ per module type, in percent."""
    shown = min(SHOWN_SIGMA, result.sigma_top)
    header = f"{'module':<12}{MATRICES:>9}" + "".join(f"{f'Δσ{i + 1}/σ{i + 1}':>11}" for i in range(shown))
    lines = ["relative change of W₀'s top singular values, (σ_i(W') − σ_i(W₀)) / σ_i(W₀)", header]
    lines.append("-" * len(header))
    for module in result.modules:
        cells = []
        for i in range(shown):
            stats = module.sigma_change[i] if i < len(module.sigma_change) else None
            cells.append("-" if stats is None else f"{stats['median']:+.2%}")
        lines.append(f"{module.module:<12}{module.matrices:>9}" + "".join(f"{c:>11}" for c in cells))
    return "\n".join(lines)
