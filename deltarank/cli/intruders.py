"""`deltarank intruders BASE TUNED`: intruder dimensions of the tuned weights (Shuttleworth et al. 2024).

Also holds the options and the progress bar that `similarity` and `extract` share.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click

from deltarank.analysis.engine.compute import ProgressHook
from deltarank.analysis.tools.intruders import DEFAULT_EPSILON, DEFAULT_TOP_K, IntruderResult
from deltarank.io.atomic import check_writable

F = TypeVar("F", bound=Callable[..., Any])
FIGURE_SUFFIXES = (".pdf", ".png", ".svg")


def analysis_options(func: F) -> F:
    """--device, --precision, --include, --exclude (as `deltarank spectrum` has them)."""
    options = [
        click.option(
            "--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True
        ),
        click.option(
            "--precision", type=click.Choice(["float32", "float64"]), default="float32", show_default=True
        ),
        click.option(
            "--include", default=None, help="Regex of tensor names to analyse instead of the default."
        ),
        click.option("--exclude", default=None, help="Regex of tensor names to leave out."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def figure_option(func: F) -> F:
    """--figure PATH: also draw the command's figure (.pdf, .png or .svg)."""
    return click.option("--figure", default=None, help="Also save the figure here (.pdf, .png or .svg).")(
        func
    )


def check_figure_path(path: str | None) -> None:
    """Fail before the work when the figure cannot be written."""
    if path is None:
        return
    if Path(path).suffix.lower() not in FIGURE_SUFFIXES:
        raise click.BadParameter(f"{path!r}: use a .pdf, .png or .svg file name", param_hint="--figure")
    check_writable(path)


def save_figure_file(fig: Any, path: str) -> None:
    """Save with the shared deterministic, atomic save helper."""
    from deltarank.figures.save import save_figure

    target = Path(path)
    save_figure(fig, target.parent, target.stem, [target.suffix.lstrip(".").lower()])


@contextmanager
def progress_bar(desc: str) -> Iterator[ProgressHook]:
    """A progress hook driving a tqdm bar on stderr, shown only when stderr is a terminal."""
    from tqdm import tqdm

    with tqdm(desc=desc, unit="matrix", disable=not sys.stderr.isatty(), leave=False) as bar:

        def hook(done: int, total: int, name: str) -> None:
            bar.total = total
            bar.set_postfix_str(name[-40:], refresh=False)
            bar.update(1)

        yield hook


@click.command()
@click.argument("base", type=click.Path(path_type=str))
@click.argument("tuned", type=click.Path(path_type=str))
@click.option("-o", "--output", default="intruders.json", show_default=True, help="Result JSON file.")
@click.option("--top-k", type=click.IntRange(min=1), default=DEFAULT_TOP_K, show_default=True)
@click.option(
    "--epsilon", type=click.FloatRange(0, 1, min_open=True), default=DEFAULT_EPSILON, show_default=True
)
@analysis_options
@figure_option
def intruders(
    base: str, tuned: str, output: str, top_k: int, epsilon: float, figure: str | None, **options: Any
) -> None:
    """Intruder dimensions: top-k singular vectors of TUNED's weights far (|cos| < ε) from all of BASE's.

    TUNED is a checkpoint or a PEFT LoRA/DoRA adapter directory (merged in the compute dtype). The counts for
    ε = 0.1 … 0.9 are stored too.
    """
    from deltarank.analysis.tools.intruders import intruders as run_intruders

    check_writable(output)
    check_figure_path(figure)
    with progress_bar("intruders") as hook:
        result = run_intruders(base, tuned, top_k=top_k, epsilon=epsilon, progress=hook, **options)
    result.to_json(output)
    click.echo(format_table(result))
    if figure:
        from deltarank.figures.subspace import plot_intruders_by_layer

        save_figure_file(plot_intruders_by_layer([result]), figure)
    click.echo(f"Wrote {output}" + (f" and {figure}" if figure else ""))


def format_table(result: IntruderResult) -> str:
    """Per module type: matrices, intruders at ε (total and max per matrix)."""
    header = f"{'module':<14}{'n':>4}{'intruders':>11}{'max':>6}"
    lines = [header, "-" * len(header)]
    groups: dict[str, list[int]] = {}
    for m in result.matrices:
        groups.setdefault(m.module, []).append(m.count)
    for module, counts in groups.items():
        lines.append(f"{module:<14}{len(counts):>4}{sum(counts):>11}{max(counts):>6}")
    sweep = ", ".join(f"{e:g}: {result.total(e)}" for e in result.epsilons)
    lines.append(f"{result.total()} intruders among the top {result.top_k} at ε = {result.epsilon:g}")
    lines.append(f"total by ε: {sweep}")
    return "\n".join(lines)
