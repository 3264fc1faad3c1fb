"""`deltarank spectrum BASE TUNED [TUNED ...]`: spectra and effective ranks of every weight delta."""

from __future__ import annotations

import glob
import os
import re
import statistics
import sys
from pathlib import Path
from typing import Any

import click

from deltarank.analysis.cache import RecordCache, fingerprint
from deltarank.analysis.engine import DEFAULT_THRESHOLDS, spectrum_many
from deltarank.analysis.noise import mantissa_bits
from deltarank.analysis.results import SpectrumResult, check_writable
from deltarank.analysis.solvers import SOLVERS
from deltarank.errors import DeltarankError, OutputError

LOW_PRECISION = {"BF16", "F16", "F8_E4M3", "F8_E5M2"}
INTEGER_DTYPES = {"I64", "I32", "I16", "I8", "U8", "BOOL"}
MAX_LISTED = 5


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
    taus = parse_thresholds(thresholds)
    tuned_paths = expand_globs(tuned)
    outputs = output_paths(tuned_paths, output)
    if csv_path:
        check_writable(csv_path)
    if csv_path and len(tuned_paths) > 1:
        raise DeltarankError("--csv takes a single TUNED; with several, read each JSON with SpectrumResult")
    rank = os.environ.get("RANK", "0")  # torchrun: one cache per rank
    cache_dir = outputs[0].parent / f".{outputs[0].name}.cache" / f"rank{rank}"
    options: dict[str, Any] = {
        "tuned": tuned_paths,
        "precision": precision,
        "include": include,
        "exclude": exclude,
    }
    options |= {"thresholds": taus, "solver": solver, "top_k": top_k}
    cache = RecordCache(cache_dir, fingerprint([base, *tuned_paths], options), resume)
    try:
        results = _run_with_progress(
            base,
            tuned_paths,
            device=device,
            precision=precision,
            include=include,
            exclude=exclude,
            thresholds=taus,
            solver=solver,
            top_k=top_k,
            cache=cache,
            workers=workers,
        )
    except DeltarankError:
        cache.remove()  # bad input: nothing worth resuming, leave no trace
        raise
    except KeyboardInterrupt:
        raise KeyboardInterrupt(interrupted_message(cache)) from None
    if not results:  # a torchrun rank other than 0: rank 0 writes
        cache.remove()
        return
    write_results(results, outputs, csv_path)
    for result in results:
        click.echo(format_table(result))
        for line in warnings_for(result):
            click.echo(f"Warning: {line}", err=True)
    if cache.reused:
        click.echo(f"Resumed: reused {cache.reused} finished matrices")
    cache.remove()
    click.echo("Wrote " + ", ".join(str(p) for p in outputs) + (f" and {csv_path}" if csv_path else ""))


def expand_globs(paths: tuple[str, ...]) -> list[str]:
    """Paths as given; a pattern such as run/checkpoint-* that names no file is expanded (sorted by step)."""
    out: list[str] = []
    for raw in paths:
        if Path(raw).exists() or not glob.has_magic(raw):
            out.append(raw)
            continue
        matches = sorted(glob.glob(raw), key=_natural_key)
        if not matches:
            raise DeltarankError(f"{raw}: no checkpoint matches this pattern")
        out.extend(matches)
    return out


def _natural_key(text: str) -> list[object]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


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


def interrupted_message(cache: RecordCache) -> str:
    """What an interrupted run says: nothing written, and what `--resume` will reuse."""
    finished = cache.finished()
    if not finished:
        return "interrupted; no output was written"
    return (
        f"interrupted; no output was written; {finished} finished matrices are kept in {cache.directory} "
        "for a rerun with --resume"
    )


def output_paths(tuned: list[str], output: str | None) -> list[Path]:
    """One JSON path per tuned checkpoint, checked writable: the -o file, or DIR/<checkpoint name>.json.

    The directory for several is created only when the results are written; here it is only checked.

    Raises:
        OutputError: a missing or read-only directory, or two checkpoints that would share one output.
    """
    if len(tuned) == 1:
        return [check_writable(output or "spectrum.json")]
    directory = Path(output or "spectra")
    if directory.exists() and not directory.is_dir():
        raise OutputError(f"{directory}: is a file; with several TUNED, -o names a directory")
    names = [Path(t.rstrip("/")).name for t in tuned]
    if len(set(names)) < len(names):  # e.g. full/final and lora/final
        names = [f"{Path(t.rstrip('/')).parent.name}-{n}" for t, n in zip(tuned, names, strict=True)]
    paths = [directory / f"{Path(n).stem if n.endswith('.safetensors') else n}.json" for n in names]
    if len(set(paths)) < len(paths):
        raise OutputError(f"several TUNED would write the same file in {directory}; give each only once")
    if not directory.is_dir():
        check_writable(directory)  # its parent must exist and be writable
        return paths
    return [check_writable(path) for path in paths]


def _run_with_progress(base: str, tuned: list[str], **kwargs: Any) -> list[SpectrumResult]:
    from tqdm import tqdm

    with tqdm(desc="spectrum", unit="matrix", disable=not sys.stderr.isatty(), leave=False) as bar:

        def hook(done: int, total: int, name: str) -> None:
            bar.total = total
            bar.set_postfix_str(name[-40:], refresh=False)
            bar.update(done - bar.n)

        return spectrum_many(base, tuned, progress=hook, **kwargs)


def format_table(result: SpectrumResult) -> str:
    """Per module type: count, median energy_90, median noise_floor, the Gaussian reference and dim."""
    header = f"{'module':<14}{'n':>4}{'energy_90':>11}{'noise_floor':>13}{'random_90':>11}{'dim':>7}"
    lines = [header, "-" * len(header)]
    for module, items in result.by_module().items():
        e90 = statistics.median(m.ranks.get("energy_90", float("nan")) for m in items)
        floor = statistics.median(m.ranks["noise_floor"] for m in items)
        random90 = statistics.median(m.random_energy_90 for m in items)
        dim = min(items[0].shape)
        lines.append(f"{module:<14}{len(items):>4}{e90:>11g}{floor:>13g}{random90:>11g}{dim:>7}")
    lines.append(
        f"{len(result.matrices)} matrices on {result.device} ({result.precision}); medians over layers"
    )
    return "\n".join(lines)


def warnings_for(result: SpectrumResult) -> list[str]:
    """Terminal warnings: low-precision storage, deltas at noise level, unchanged and skipped tensors."""
    out = []
    # Only dense deltas carry storage noise: LoRA σ come from the factors, DoRA's from W as stored.
    dense = [m for m in result.matrices if m.kind == "dense"]
    dtypes = {m.base_dtype for m in dense} | {m.tuned_dtype for m in dense}
    low = sorted(dtypes & LOW_PRECISION)
    if low:
        out.append(
            f"checkpoint stored in {'/'.join(low)}: rounding noise is full-rank, so the 'numerical' rank is "
            "meaningless; read 'noise_floor' instead"
        )
    quantized = sorted(d for d in dtypes if mantissa_bits(d) is None and d not in INTEGER_DTYPES)
    if quantized:
        out.append(
            f"checkpoint stored quantized ({'/'.join(quantized)}): quantization error is not modelled, so "
            "'noise_floor' cannot separate it from the update (it counts like 'numerical')"
        )
    noisy = [m.name for m in result.matrices if m.at_noise_level]
    if noisy:
        out.append(
            f"{len(noisy)} delta(s) sit at storage-noise level (no σ above the noise edge): {_few(noisy)}"
        )
    unchanged = [m.name for m in result.matrices if m.delta_norm == 0]
    if unchanged:
        out.append(f"{len(unchanged)} matrix(es) are identical in base and tuned: {_few(unchanged)}")
    if result.skipped:
        out.append(
            f"{len(result.skipped)} tensor(s) skipped: {_few([f'{s.name} ({s.reason})' for s in result.skipped])}"
        )
    return out


def _few(items: list[str]) -> str:
    shown = ", ".join(items[:MAX_LISTED])
    return shown + (f", … (+{len(items) - MAX_LISTED} more)" if len(items) > MAX_LISTED else "")
