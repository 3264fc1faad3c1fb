"""`deltarank spectrum BASE TUNED`: spectra and effective ranks of every weight delta."""

from __future__ import annotations

import statistics
import sys

import click

from deltarank.analysis.engine import DEFAULT_THRESHOLDS
from deltarank.analysis.engine import spectrum as run_spectrum
from deltarank.analysis.results import SpectrumResult, check_writable
from deltarank.errors import DeltarankError

LOW_PRECISION = {"BF16", "F16", "F8_E4M3", "F8_E5M2"}
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
@click.argument("tuned", type=click.Path(path_type=str))
@click.option("-o", "--output", default="spectrum.json", show_default=True, help="Result JSON file.")
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
@click.option("--csv", "csv_path", default=None, help="Also write one CSV row per matrix here.")
def spectrum(
    base: str,
    tuned: str,
    output: str,
    device: str,
    precision: str,
    include: str | None,
    exclude: str | None,
    thresholds: str,
    csv_path: str | None,
) -> None:
    """SVD spectrum and effective ranks of ΔW = TUNED − BASE for every weight matrix.

    BASE is a .safetensors file, a Hugging Face model directory or a GGUF file; TUNED is one of those or a
    PEFT LoRA/DoRA adapter directory.
    """
    taus = parse_thresholds(thresholds)
    check_writable(output)
    if csv_path:
        check_writable(csv_path)
    result = _run_with_progress(base, tuned, device, precision, include, exclude, taus)
    result.to_json(output)
    if csv_path:
        result.to_csv(csv_path)
    click.echo(format_table(result))
    for line in warnings_for(result):
        click.echo(f"Warning: {line}", err=True)
    click.echo(f"Wrote {output}" + (f" and {csv_path}" if csv_path else ""))


def _run_with_progress(
    base: str,
    tuned: str,
    device: str,
    precision: str,
    include: str | None,
    exclude: str | None,
    taus: tuple[float, ...],
) -> SpectrumResult:
    from tqdm import tqdm

    with tqdm(desc="spectrum", unit="matrix", disable=not sys.stderr.isatty(), leave=False) as bar:

        def hook(done: int, total: int, name: str) -> None:
            bar.total = total
            bar.set_postfix_str(name[-40:], refresh=False)
            bar.update(1)

        return run_spectrum(
            base,
            tuned,
            device=device,
            precision=precision,
            include=include,
            exclude=exclude,
            thresholds=taus,
            progress=hook,
        )


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
    dtypes = {m.base_dtype for m in result.matrices} | {
        m.tuned_dtype for m in result.matrices if m.kind == "dense"
    }
    low = sorted(dtypes & LOW_PRECISION)
    if low:
        out.append(
            f"checkpoint stored in {'/'.join(low)}: rounding noise is full-rank, so the 'numerical' rank is "
            "meaningless; read 'noise_floor' instead"
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
