"""The options several commands share, declared once: one name and one behaviour per concept.

| concept | option |
|---|---|
| where the result goes (file or directory; `-` = stdout for a JSON result) | `-o/--output` |
| replace an existing result | `--force` |
| compute device / dtype | `--device auto|cpu|cuda|cuda:N`, `--precision float32|float64` |
| which tensors | `--include REGEX` (replaces the default selection), `--exclude REGEX` |
| CPU decompositions at once | `--workers N` |
| number of top singular values / vectors used | `--top-k K` |
| rank of a LoRA adapter (trained, extracted, compared against) | `--lora-rank R` |
| no table or progress, only errors | `-q/--quiet` |
| analyse a TUNED whose config describes another architecture than BASE's | `--allow-different-base` |
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from deltarank.errors import OptionError, OutputError
from deltarank.io.device import DEVICE_NAMES, DEVICES, valid_device

F = TypeVar("F", bound=Callable[..., Any])
STDOUT = "-"
FIGURE_SUFFIXES = (".pdf", ".png", ".svg")


def _stack(*options: Callable[[F], F]) -> Callable[[F], F]:
    def decorate(func: F) -> F:
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


def output_option(
    help_text: str, default: str | None = None, required: bool = False, metavar: str = "PATH"
) -> Callable[[F], F]:
    """`-o/--output` and `--force`: every command's output, refused when it exists unless `--force`.

    `metavar`: FILE for a result file, PATH for a directory (or a file or a directory)."""
    # No `default=None` when there is none: click 8.5 takes an explicit None for a default and then never
    # enforces `required` (`deltarank extract BASE TUNED` without -o crashed on a None path).
    output = (
        click.option("-o", "--output", default=default, show_default=True, metavar=metavar, help=help_text)
        if default is not None
        else click.option("-o", "--output", required=required, metavar=metavar, help=help_text)
    )
    return _stack(
        output,
        click.option("--force", is_flag=True, help="Replace the output if it already exists."),
    )


class DeviceType(click.ParamType):
    """auto, cpu, cuda or cuda:N (checked for CUDA when the run starts)."""

    name = "device"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value)
        if valid_device(text):
            return text
        self.fail(f"{text!r} is not one of {DEVICE_NAMES}", param, ctx)

    def shell_complete(self, ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
        from click.shell_completion import CompletionItem

        return [CompletionItem(d) for d in DEVICES if d.startswith(incomplete)]


DEVICE = DeviceType()


class CheckedIntRange(click.IntRange):
    """An integer range that `-h` and the reference pages show, and that the command checks itself, with its
    own one-line error and exit status (click's range check would print the usage too): parsing only converts.
    tests/cli/test_help.py checks that each such option refuses a value past its bounds."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        return click.INT.convert(value, param, ctx)


class CheckedFloatRange(click.FloatRange):
    """A float range that `-h` and the reference pages show, and that the command checks itself (see
    `CheckedIntRange`)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        return click.FLOAT.convert(value, param, ctx)


def device_option(func: F) -> F:
    """`--device auto|cpu|cuda|cuda:N`."""
    return click.option(
        "--device", type=DEVICE, default="auto", show_default=True, help="auto, cpu, cuda or cuda:N."
    )(func)


def analysis_options(func: F) -> F:
    """--device, --precision, --include, --exclude, --download, --allow-different-base: how every analysis
    command selects, computes and checks its inputs."""
    return _stack(
        device_option,
        click.option(
            "--precision",
            type=click.Choice(["float32", "float64"]),
            default="float32",
            show_default=True,
            help="Compute dtype; both tensors are upcast to it before subtracting.",
        ),
        click.option(
            "--include",
            default=None,
            metavar="REGEX",
            help="Regex of tensor names to analyse instead of the default selection.",
        ),
        click.option("--exclude", default=None, metavar="REGEX", help="Regex of tensor names to leave out."),
        download_option,
        click.option(
            "--allow-different-base",
            is_flag=True,
            help="Compare anyway when TUNED's config (config.json, GGUF metadata) describes another "
            "architecture than BASE's (model type, layers, widths, heads); refused otherwise.",
        ),
    )(func)


def download_option(func: F) -> F:
    """`--download`: fetch repo ids missing from the Hugging Face cache (never pickle files)."""
    return click.option(
        "--download",
        is_flag=True,
        help="Fetch org/name repo ids missing from the Hugging Face cache (safetensors, GGUF, JSON and "
        "tokenizer files only; never pickle). Without it nothing is downloaded.",
    )(func)


def fetch_missing(download: bool, specs: list[str]) -> None:
    """With `--download`, fetch the repo ids among `specs` that the Hugging Face cache lacks."""
    if download:
        from deltarank.io.hub import download_missing

        download_missing(specs)


DRY_RUN_HELP = (
    "Print the pairs that would be analysed, those skipped, the decompositions and the estimated peak memory, "
    "from the headers only; compute and write nothing."
)


def dry_run_option(func: F | None = None, *, help: str = DRY_RUN_HELP) -> Any:
    """`--dry-run`: show what the command would do, write nothing; `help` says what a command shows.

    Used bare (`@dry_run_option`) by the analysis commands, or as `@dry_run_option(help=...)`.
    """

    def decorate(f: F) -> F:
        return click.option("--dry-run", is_flag=True, help=help)(f)

    return decorate(func) if func is not None else decorate


def quiet_option(func: F) -> F:
    """`-q/--quiet`: no table, no progress, no `Wrote` line; errors and warnings only."""
    return click.option("-q", "--quiet", is_flag=True, help="Print only errors and warnings.")(func)


def figure_option(func: F) -> F:
    """--figure PATH: also draw the command's figure (.pdf, .png or .svg)."""
    return click.option(
        "--figure", default=None, metavar="FILE", help="Also save the figure here (.pdf, .png or .svg)."
    )(func)


def check_new_file(path: str | Path, force: bool) -> Path:
    """An output file that may be written: its directory exists and is writable, and it does not exist yet
    unless `force` (a finished result is never lost by a typo).

    Raises:
        OutputError: the file exists (without `force`), or its directory cannot be written.
    """
    from deltarank.io.atomic import check_writable

    return refuse_existing(check_writable(path), force)


def refuse_existing(path: str | Path, force: bool) -> Path:
    """`path`, unless it exists and `force` is not given.

    Raises:
        OutputError: `path` exists and `force` is False.
    """
    target = Path(path)
    if target.exists() and not force:
        raise OutputError(f"{target}: already exists (use --force to replace it)")
    return target


def check_figure_path(path: str | None, force: bool) -> None:
    """Fail before the work when the figure cannot be written."""
    if path is None:
        return
    if Path(path).suffix.lower() not in FIGURE_SUFFIXES:
        raise click.BadParameter(f"{path!r}: use a .pdf, .png or .svg file name", param_hint="--figure")
    check_new_file(path, force)


def save_figure_file(fig: Any, path: str) -> None:
    """Save with the shared deterministic, atomic save helper."""
    from deltarank.figures.save import save_figure

    target = Path(path)
    save_figure(fig, target.parent, target.stem, [target.suffix.lstrip(".").lower()])


def echo(text: str, quiet: bool, to_stdout: bool = True) -> None:
    """Print a table or status line: to stdout, or to stderr when stdout carries the result (`-o -`)."""
    if not quiet:
        click.echo(text, err=not to_stdout)


def parse_numbers(text: str | None, option: str, example: str) -> tuple[float, ...]:
    """A comma-separated list of numbers of `option` (`--thresholds`, `--dare-drops`): `0.5,0.9` -> (0.5, 0.9);
    empty or None -> ().

    Raises:
        OptionError: a part that is not a number (the message shows `example`).
    """
    try:
        return tuple(float(part) for part in (text or "").split(",") if part.strip())
    except ValueError:
        raise OptionError(f"{option} {text!r}: expected comma-separated numbers like {example}") from None


def parse_sizes(text: str | None) -> tuple[int, ...]:
    """The `--sizes` of `similarity` and `placement`: `1,8,64` -> (1, 8, 64); empty or None -> ().

    Raises:
        OptionError: a part that is not an integer.
    """
    if not text:
        return ()
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise OptionError(f"--sizes {text!r}: expected comma-separated integers like 1,8,64") from None
