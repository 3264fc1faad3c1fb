"""`deltarank study`: a grid of training runs, each evaluated, as study.json, study.csv, figures and report.md."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from deltarank.cli.options import device_option, dry_run_option, output_option
from deltarank.study.design.study_file import SIZES, preset_names

if TYPE_CHECKING:
    from deltarank.study.design.study import Study


@click.command()
@click.argument("study_file", required=False, type=click.Path(dir_okay=False))
@click.option(
    "--preset",
    default=None,
    metavar="NAME",
    help=f"A shipped study instead of STUDY_FILE: {', '.join(preset_names())}.",
)
@click.option(
    "--size",
    type=click.Choice(SIZES),
    default="cpu",
    show_default=True,
    help="Preset size: cpu (2 CPU cores, tens of minutes) or full (meant for GPUs).",
)
@output_option("Study directory (runs, base/, study.json, study.csv, report.md, figures/).", required=True)
@dry_run_option(
    help="List every run (state, steps, tokens, coordinates) with the estimated training and evaluation time; "
    "train and write nothing."
)
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    metavar="N",
    help="Runs side by side (local processes).",
)
@click.option(
    "--executor",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="local (this machine) or ray (one Ray task per run; pip install 'deltarank[ray]').",
)
@click.option(
    "--address",
    default="local",
    show_default=True,
    metavar="ADDRESS",
    help="Ray cluster: host:port, auto (a running cluster) or local (start one here).",
)
@device_option
def study(
    study_file: str | None,
    preset: str | None,
    size: str,
    output: str,
    force: bool,
    dry_run: bool,
    jobs: int,
    executor: str,
    address: str,
    device: str,
) -> None:
    """Train every run of STUDY_FILE (or --preset), measure learning, forgetting, diversity, cost and the ranks
    of ΔW, and write the study's table, figures and report to --output. Rerunning the same study with the same
    --output continues it (finished runs are kept, a stopped run resumes from its last checkpoint)."""
    from deltarank.errors import DeltarankError
    from deltarank.study.design.study_file import load_study, preset_path

    if (study_file is None) == (preset is None):
        raise DeltarankError("give a STUDY_FILE or --preset NAME (one of them)")
    path = Path(study_file) if study_file is not None else preset_path(str(preset), size)
    spec = load_study(path)
    out_dir = Path(output)
    from deltarank.io.atomic import refuse_overlap
    from deltarank.study.design.checks import check_study_inputs, study_input_paths

    check_study_inputs(spec)  # models, data, evaluate: sets: before anything is written, --dry-run too
    refuse_overlap(out_dir, study_input_paths(spec))
    if dry_run:
        _print_plan(spec, out_dir)
        return
    from deltarank.study.run.directory import prepare_study_dir
    from deltarank.study.run.executors import make_executor
    from deltarank.study.run.runner import run_study

    prepare_study_dir(spec, out_dir, force)  # refuse another study before starting any engine
    runner = make_executor(executor, jobs, address, device)
    try:
        document = run_study(
            spec,
            out_dir,
            device=device,
            force=force,
            executor=runner,
            echo=lambda s: click.echo(s, err=True),
            check=False,  # checked above, before study.yaml was written
        )
    finally:
        runner.close()
    click.echo(f"{len(document['runs'])} runs of study {spec.name!r} -> {out_dir / 'study.json'}")


def _print_plan(spec: Study, out_dir: Path) -> None:
    """The runs, their state in `out_dir` and the estimated training time left."""
    from deltarank.study.design.coverage import not_measured, not_measured_line
    from deltarank.study.design.held_out_split import split_plan
    from deltarank.study.run.planning import plan

    rows = plan(spec, out_dir)
    click.echo(f"study {spec.name!r}: {len(rows)} runs -> {out_dir}")
    for line in [*split_plan(spec), not_measured_line(not_measured(spec))]:
        if line:
            click.echo(line, err=True)
    click.echo(f"{'run':<36} {'state':<10} {'steps':>6} {'tokens':>10} {'est.':>8}  coordinates")
    total = 0.0
    unknown = False
    for row in rows:
        seconds = row["seconds"]
        unknown = unknown or seconds is None
        total += seconds or 0.0
        coords = ", ".join(f"{k}={v}" for k, v in row["coordinates"].items())
        if row["from"]:
            coords += f" (from {row['from']})"
        if row.get("recommend"):
            policy = ", ".join(f"{k} {v}" for k, v in row["recommend"].items() if k != "from")
            coords += f" (LoRA ranks from the ΔW of {row['recommend']['from']}: {policy})"
        click.echo(
            f"{row['name']:<36} {row['state']:<10} {_text(row['steps']):>6} {_text(row['tokens']):>10} "
            f"{_duration(seconds):>8}  {coords}"
        )
    rates = sorted({f"{r['tokens_per_second']:.0f}" for r in rows})
    click.echo(
        f"estimated training time left: {_duration(total)}{' + runs of unknown length' if unknown else ''} "
        f"(at {'/'.join(rates)} tokens/s: this study's finished runs, else a 2-core CPU figure)"
    )
    evaluations = [r["evaluation_seconds"] for r in rows]
    if all(seconds is None for seconds in evaluations):
        click.echo(
            "estimated evaluation time left: not known until a run of this study is measured (it can exceed the "
            "training time: held-out answers, samples and spectra)"
        )
    else:
        missing = sum(seconds is None for seconds in evaluations)
        click.echo(
            f"estimated evaluation time left: {_duration(sum(s or 0.0 for s in evaluations))}"
            f"{f' + {missing} runs of a model not measured yet' if missing else ''} "
            "(the median measurement of this study's measured runs, per model; base models left out)"
        )


def _text(value: object) -> str:
    return "?" if value is None else f"{value:,}" if isinstance(value, int) else str(value)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
