"""`deltarank spectrum BASE TUNED [TUNED ...]`: spectra and effective ranks of every weight delta;
`deltarank spectrum ADAPTER_DIR`: those of a prompt-based or bottleneck adapter's own matrices."""

from __future__ import annotations

import os
from pathlib import Path

import click

from deltarank.analysis.engine.cache import RecordCache, cache_directory, check_cache
from deltarank.analysis.engine.options import DEFAULT_THRESHOLDS, SpectrumOptions
from deltarank.analysis.engine.run import spectrum_many
from deltarank.analysis.maths.sparsity import DEFAULT_SPARSITY_ATOL
from deltarank.analysis.maths.svd import SOLVERS
from deltarank.analysis.results.columns import GAUSS_E90, MATRICES, WIDTH
from deltarank.analysis.results.medians import median
from deltarank.analysis.results.spectrum import SpectrumResult, output_paths
from deltarank.cli.options import (
    STDOUT,
    analysis_options,
    check_new_file,
    dry_run_option,
    echo,
    fetch_missing,
    output_option,
    parse_numbers,
    quiet_option,
    refuse_existing,
)
from deltarank.cli.references import base_of_runs, is_run
from deltarank.errors import OptionError
from deltarank.io.atomic import refuse_overlap
from deltarank.io.model_ref import local_path
from deltarank.io.progress import Progress
from deltarank.io.source import expand_checkpoints
from deltarank.io.standalone import is_standalone_adapter


def parse_thresholds(text: str) -> tuple[float, ...]:
    """`0.5,0.9,0.99` -> (0.5, 0.9, 0.99)."""
    return parse_numbers(text, "--thresholds", "0.5,0.9,0.99")


@click.command()
@click.argument("base", type=click.Path(path_type=str))
@click.argument("tuned", nargs=-1, type=click.Path(path_type=str))
@output_option(
    "Result JSON file (default spectrum.json; - for stdout); with several TUNED, a directory (default spectra/)."
)
@analysis_options
@click.option(
    "--thresholds",
    default=",".join(str(t) for t in DEFAULT_THRESHOLDS),
    show_default=True,
    metavar="LIST",
    help="Energy thresholds τ, comma-separated (keys energy_<percent>).",
)
@click.option(
    "--csv",
    "csv_path",
    default=None,
    metavar="FILE",
    help="Also write one CSV row per matrix to this file (single TUNED).",
)
@click.option(
    "--solver",
    type=click.Choice(list(SOLVERS)),
    default="auto",
    show_default=True,
    help="auto, svd, gram (exact) or randomized (approximate top-k, labelled so in the output).",
)
@click.option(
    "--top-k",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="σ computed by --solver randomized (refused with the exact solvers, which compute every σ).",
)
@click.option(
    "--quantization-error/--no-quantization-error",
    default=None,
    help="QLoRA adapters (trained on a 4-bit base): also record each weight's quantisation error "
    "dequant(W_nf4) − W and the total change (BASE must be the full-precision base) [default: on for them].",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Reuse the matrices a killed run already finished. Without it a rerun is refused while that cache "
    "exists; --force discards it.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="CPU decompositions at once (Gram solver; warned about otherwise) [one per core, at most 4]; each "
    "holds one delta.",
)
@click.option(
    "--sparsity-atol",
    type=click.FloatRange(min=0.0),
    default=DEFAULT_SPARSITY_ATOL,
    show_default=True,
    metavar="X",
    help="Absolute tolerance of the sparsity profile: the share of entries with |Δw| ≤ it (Mukherjee et al. "
    "2025 use 1e-5), beside the exact zeros and the share within half an ulp of the base weight.",
)
@quiet_option
@dry_run_option
def spectrum(
    base: str,
    tuned: tuple[str, ...],
    output: str | None,
    force: bool,
    device: str,
    precision: str,
    include: str | None,
    exclude: str | None,
    download: bool,
    allow_different_base: bool,
    thresholds: str,
    csv_path: str | None,
    solver: str,
    top_k: int | None,
    quantization_error: bool | None,
    resume: bool,
    workers: int | None,
    sparsity_atol: float,
    quiet: bool,
    dry_run: bool,
) -> None:
    """SVD spectrum and effective ranks of ΔW = TUNED − BASE for every weight matrix.

    BASE is a built-in model (smollm2-135m, gemma3-270m), a .safetensors file, a Hugging Face model directory,
    a GGUF file or a cached repo id org/name[@rev]; TUNED is one of those, a PEFT adapter directory or a
    `deltarank train` output. Several TUNED (e.g. run/checkpoint-*) share one pass over BASE.

    `deltarank spectrum RUN`: a train output alone is compared with the base its run.json records.

    A prompt-based (prompt, prefix, P-tuning) or bottleneck adapter changes no weight: give its directory
    alone, `deltarank spectrum ADAPTER_DIR`, for the spectra of its own learned matrices.
    """
    if not tuned:
        if is_standalone_adapter(local_path(base)):
            tuned = (base,)
        elif is_run(base):  # a train output alone: BASE is the one its run.json records
            tuned = (base,)
            base, line = base_of_runs("spectrum", tuned, "BASE TUNED")
            echo(line, quiet, to_stdout=output != STDOUT)
        else:
            raise OptionError(
                f"missing TUNED: `deltarank spectrum BASE TUNED`; a single argument must be a `deltarank train` "
                f"output directory (its run.json names the base), or a prompt-based (prompt, prefix, "
                f"P-tuning) or bottleneck adapter directory, and {base} is not one"
            )
    options = SpectrumOptions(
        device=device,
        precision=precision,
        include=include,
        exclude=exclude,
        thresholds=parse_thresholds(thresholds),
        solver=solver,
        top_k=top_k,
        workers=workers,
        quantization_error=quantization_error,
        allow_different_base=allow_different_base,
        sparsity_atol=sparsity_atol,
    )
    if dry_run:  # headers only: nothing is downloaded, computed or written
        from deltarank.analysis.tools.preview import preview

        click.echo(preview(base, expand_checkpoints(tuned), options).to_text())
        return
    fetch_missing(download, [base, *tuned])
    tuned_paths = expand_checkpoints(tuned)
    to_stdout = output == STDOUT
    if to_stdout and len(tuned_paths) > 1:
        raise OptionError("-o - (stdout) takes a single TUNED; with several, -o names a directory")
    if csv_path and len(tuned_paths) > 1:
        raise OptionError("--csv takes a single TUNED; with several, read each JSON with SpectrumResult")
    outputs = output_paths(tuned_paths, None if to_stdout else output)
    inputs = [base, *tuned_paths]
    if output is not None and not to_stdout:
        refuse_overlap(output, inputs)  # the file, or the directory of several
    for path in outputs if not to_stdout else []:
        refuse_overlap(path, inputs)
        refuse_existing(path, force)  # output_paths checked that each can be written
    if csv_path:
        refuse_overlap(csv_path, inputs, option="--csv")
        check_new_file(csv_path, force)
    # The cache keeps finished matrices for a later --resume even when this run does not reuse any; it is
    # removed once the result files are written. An earlier run's cache is discarded only with --force.
    cache_dir = cache_directory(outputs[0], os.environ.get("RANK", "0"))  # torchrun: one per rank
    digest = options.fingerprint(base, tuned_paths)
    check_cache(cache_dir, digest, resume, force)
    for line in options.ignored(options.compute_device()):
        click.echo(f"Warning: {line}", err=True)
    cache = RecordCache(cache_dir, digest, resume)
    with Progress("spectrum", unit="matrices", quiet=quiet) as progress:
        results = spectrum_many(base, tuned_paths, options, progress=progress.hook, resume=cache)
    if not results:  # a torchrun rank other than 0: rank 0 writes
        cache.remove()
        return
    if to_stdout:
        click.echo(results[0].to_json())
        if csv_path:
            results[0].to_csv(csv_path)
    else:
        write_results(results, outputs, csv_path)
    several = len(results) > 1
    for result in results:
        label = f"{result.tuned}:\n" if several else ""  # several TUNED: whose table is whose
        echo(label + format_table(result), quiet, to_stdout=not to_stdout)
        for line in result.warnings():
            click.echo(f"Warning: {result.tuned}: {line}" if several else f"Warning: {line}", err=True)
    if results[0].resumed:
        echo(f"Resumed: reused {results[0].resumed} finished matrices", quiet, to_stdout=not to_stdout)
    cache.remove()
    written = ["stdout"] if to_stdout else [str(p) for p in outputs]
    echo("Wrote " + ", ".join(written) + (f" and {csv_path}" if csv_path else ""), quiet, not to_stdout)


def write_results(results: list[SpectrumResult], outputs: list[Path], csv_path: str | None) -> None:
    """Write every result file, each atomically; an interrupt part-way says how many were written."""
    for path in outputs:
        path.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    try:
        for result, path in zip(results, outputs, strict=True):
            result.to_json(path)
            written += 1
        if csv_path:
            results[0].to_csv(csv_path)
    except KeyboardInterrupt:
        raise KeyboardInterrupt(
            f"interrupted while writing: {written} of {len(outputs)} result files written, none of them partial; "
            "rerun with --resume to write them all (the finished matrices are kept)"
        ) from None


def format_table(result: SpectrumResult) -> str:
    """Per module type: matrices, median energy_90, median noise_floor, the Gaussian r₀.₉ and the width."""
    header = f"{'module':<14}{MATRICES:>9}{'energy_90':>11}{'noise_floor':>13}{GAUSS_E90:>11}{WIDTH:>7}"
    lines = [header, "-" * len(header)]
    for module, items in result.by_module().items():
        e90 = _cell(median(m.ranks.get("energy_90") for m in items))
        floor = _cell(median(m.ranks.get("noise_floor") for m in items))
        gauss = _cell(median(m.random_energy_90 for m in items))
        width = min(items[0].shape)
        lines.append(f"{module:<14}{len(items):>9}{e90:>11}{floor:>13}{gauss:>11}{width:>7}")
    lines.append(
        f"{len(result.matrices)} matrices on {result.device} ({result.precision}); medians over layers"
    )
    return "\n".join(lines)


def _cell(value: float | None) -> str:
    """A table cell: `-` when no matrix has the value (an approximate spectrum cannot tell)."""
    return "-" if value is None else f"{value:g}"
