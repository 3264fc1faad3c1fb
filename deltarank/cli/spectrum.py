"""`deltarank spectrum BASE TUNED [TUNED ...]`: spectra and effective ranks of every weight delta."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from deltarank.analysis.engine.cache import RecordCache, cache_directory
from deltarank.analysis.engine.options import DEFAULT_THRESHOLDS, SpectrumOptions
from deltarank.analysis.engine.run import spectrum_many
from deltarank.analysis.maths.svd import SOLVERS
from deltarank.analysis.results.medians import median
from deltarank.analysis.results.spectrum import SpectrumResult, output_paths
from deltarank.errors import DeltarankError
from deltarank.io.atomic import check_writable
from deltarank.io.source import expand_checkpoints


def parse_thresholds(text: str) -> tuple[float, ...]:
    """`0.5,0.9,0.99` -> (0.5, 0.9, 0.99)."""
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise DeltarankError(
            f"--thresholds {text!r}: expected comma-separated numbers like 0.5,0.9,0.99"
        ) from None


@click.command()
@click.argument("base", type=click.Path(path_type=str))
@click.argument("tuned", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option(
    "-o",
    "--output",
    default=None,
    help="Result JSON file (default spectrum.json); with several TUNED, a directory (default spectra/).",
)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--precision", type=click.Choice(["float32", "float64"]), default="float32", show_default=True)
@click.option("--include", default=None, help="Regex of tensor names to analyse (embeddings/LM head too).")
@click.option("--exclude", default=None, help="Regex of tensor names to leave out.")
@click.option(
    "--thresholds",
    default=",".join(str(t) for t in DEFAULT_THRESHOLDS),
    show_default=True,
    help="Energy thresholds τ, comma-separated (keys energy_<percent>).",
)
@click.option("--csv", "csv_path", default=None, help="Also write one CSV row per matrix (single TUNED).")
@click.option(
    "--solver",
    type=click.Choice(list(SOLVERS)),
    default="auto",
    show_default=True,
    help="auto, svd, gram (exact) or randomized (approximate top-k, labelled so in the output).",
)
@click.option("--top-k", type=click.IntRange(min=1), default=None, help="σ kept by --solver randomized.")
@click.option("--resume", is_flag=True, help="Reuse the matrices a killed run already finished.")
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="CPU decompositions at once (Gram solver) [one per core, at most 4]; each holds one delta.",
)
def spectrum(
    base: str,
    tuned: tuple[str, ...],
    output: str | None,
    device: str,
    precision: str,
    include: str | None,
    exclude: str | None,
    thresholds: str,
    csv_path: str | None,
    solver: str,
    top_k: int | None,
    resume: bool,
    workers: int | None,
) -> None:
    """SVD spectrum and effective ranks of ΔW = TUNED − BASE for every weight matrix.

    BASE is a .safetensors file, a Hugging Face model directory or a GGUF file; TUNED is one of those or a
    PEFT LoRA/DoRA adapter directory. Several TUNED (e.g. run/checkpoint-*) share one pass over BASE.
    """
    options = SpectrumOptions(
        device=device,
        precision=precision,
        include=include,
        exclude=exclude,
        thresholds=parse_thresholds(thresholds),
        solver=solver,
        top_k=top_k,
        workers=workers,
    )
    tuned_paths = expand_checkpoints(tuned)
    outputs = output_paths(tuned_paths, output)
    if csv_path:
        check_writable(csv_path)
    if csv_path and len(tuned_paths) > 1:
        raise DeltarankError("--csv takes a single TUNED; with several, read each JSON with SpectrumResult")
    # The cache keeps finished matrices for a later --resume even when this run does not reuse any; it is
    # removed once the result files are written.
    cache_dir = cache_directory(outputs[0], os.environ.get("RANK", "0"))  # torchrun: one per rank
    cache = RecordCache(cache_dir, options.fingerprint(base, tuned_paths), resume)
    results = _run_with_progress(base, tuned_paths, options, cache)
    if not results:  # a torchrun rank other than 0: rank 0 writes
        cache.remove()
        return
    write_results(results, outputs, csv_path)
    for result in results:
        click.echo(format_table(result))
        for line in result.warnings():
            click.echo(f"Warning: {line}", err=True)
    if results[0].resumed:
        click.echo(f"Resumed: reused {results[0].resumed} finished matrices")
    cache.remove()
    click.echo("Wrote " + ", ".join(str(p) for p in outputs) + (f" and {csv_path}" if csv_path else ""))


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


def _run_with_progress(
    base: str, tuned: list[str], options: SpectrumOptions, cache: RecordCache
) -> list[SpectrumResult]:
    from tqdm import tqdm

    with tqdm(desc="spectrum", unit="matrix", disable=not sys.stderr.isatty(), leave=False) as bar:

        def hook(done: int, total: int, name: str) -> None:
            bar.total = total
            bar.set_postfix_str(name[-40:], refresh=False)
            bar.update(done - bar.n)

        return spectrum_many(base, tuned, options, progress=hook, resume=cache)


def format_table(result: SpectrumResult) -> str:
    """Per module type: count, median energy_90, median noise_floor, the Gaussian reference and dim."""
    header = f"{'module':<14}{'n':>4}{'energy_90':>11}{'noise_floor':>13}{'random_90':>11}{'dim':>7}"
    lines = [header, "-" * len(header)]
    for module, items in result.by_module().items():
        e90 = _cell(median(m.ranks.get("energy_90") for m in items))
        floor = _cell(median(m.ranks.get("noise_floor") for m in items))
        random90 = _cell(median(m.random_energy_90 for m in items))
        dim = min(items[0].shape)
        lines.append(f"{module:<14}{len(items):>4}{e90:>11}{floor:>13}{random90:>11}{dim:>7}")
    lines.append(
        f"{len(result.matrices)} matrices on {result.device} ({result.precision}); medians over layers"
    )
    return "\n".join(lines)


def _cell(value: float | None) -> str:
    """A table cell: `-` when no matrix has the value (an approximate spectrum cannot tell)."""
    return "-" if value is None else f"{value:g}"
