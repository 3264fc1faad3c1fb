"""`deltarank reproduce`: the study preset `quick` (full fine-tuning vs LoRA), with its options applied."""

from __future__ import annotations

import shutil
from pathlib import Path

import click

from deltarank.cli.options import device_option, output_option
from deltarank.errors import OutputError
from deltarank.io.atomic import check_output_dir, refuse_overlap


@click.command()
@click.option(
    "--quick/--long", default=True, show_default=True, help="Quick: minutes on a CPU; long: a GPU run."
)
@output_option(
    "Study directory (runs, spectra, figures, study.json, summary.json, report.md).", default="runs/reproduce"
)
@click.option(
    "--resume", is_flag=True, help="Continue a stopped reproduction in OUTPUT (finished runs are kept)."
)
@click.option(
    "--domain",
    type=click.Choice(["code", "math"]),
    default="code",
    show_default=True,
    help="Training data of both runs: builtin:code (standard-library Python functions) or builtin:math "
    "(generated maths problems with worked solutions).",
)
@device_option
@click.option(
    "--model",
    default="smollm2-135m",
    show_default=True,
    metavar="PATH",
    help="Base model: smollm2-135m, gemma3-270m, a .gguf file or a Hugging Face model directory.",
)
@click.option(
    "--lora-rank",
    type=click.IntRange(min=1),
    default=16,
    show_default=True,
    metavar="N",
    help="LoRA rank r (α = 2r).",
)
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    metavar="N",
    help="Training seed of both runs (initialisation, data order, dropout).",
)
@click.option(
    "--max-steps",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="Optimizer steps of each run instead of the preset's schedule (smoke runs).",
)
@click.option(
    "--subspace/--no-subspace", default=True, show_default=True, help="Intruders and φ, full vs LoRA."
)
def reproduce(
    quick: bool,
    output: str,
    force: bool,
    resume: bool,
    domain: str,
    device: str,
    model: str,
    lora_rank: int,
    seed: int,
    max_steps: int | None,
    subspace: bool,
) -> None:
    """Reproduce "LoRA Learns Less and Forgets Less" at small scale: full fine-tuning learns perturbations of
    far higher rank than LoRA, and LoRA forgets less. It runs the study preset `quick` (`deltarank study
    --preset quick` gives the same study.json and summary.json) with these options applied; `--resume`
    continues a stopped run where it stopped."""
    from deltarank.analysis.results.rank_claim import describe
    from deltarank.figures.learning import load_summary
    from deltarank.study.design.checks import check_study_inputs, study_input_paths
    from deltarank.study.design.reproduce_preset import reproduction_study
    from deltarank.study.design.study_file import parse_study
    from deltarank.study.report.summary import SUMMARY_JSON
    from deltarank.study.run.directory import STUDY_YAML, prepare_study_dir
    from deltarank.study.run.runner import REPORT, run_study

    out_dir = Path(output)
    raw = reproduction_study(quick, domain, model, lora_rank, seed, max_steps, subspace)
    study = parse_study(raw, f"deltarank reproduce {'--quick' if quick else '--long'}")
    check_study_inputs(study)  # a missing model fails before anything is replaced
    refuse_overlap(out_dir, study_input_paths(study))  # --force or --resume: never over the base model
    if not resume:  # an unstarted study (study.yaml alone) is taken over: nothing to lose
        entries = {p.name for p in out_dir.iterdir()} if out_dir.is_dir() else set()
        if not force and entries - {STUDY_YAML}:
            raise OutputError(
                f"{out_dir}: already exists (use --resume to continue it, or --force to replace it)"
            )
        check_output_dir(out_dir, overwrite=True)  # a file, or a parent that is not writable, is refused
        if force and out_dir.is_dir():
            shutil.rmtree(out_dir)
    prepare_study_dir(study, out_dir, force=False)
    run_study(study, out_dir, device=device, echo=lambda line: click.echo(line, err=True), check=False)
    summary = load_summary(out_dir / SUMMARY_JSON)
    claim = summary["headline"]["rank_claim"]
    click.echo(
        f"Full fine-tuning's energy_90 ÷ LoRA's r: {describe(claim)}; rank claim (10–100×) {claim['verdict']}; "
        f"forgetting: full {summary['forgetting']['full']:+.4f}, LoRA {summary['forgetting']['lora']:+.4f} "
        f"(general-text loss increase). See {out_dir / REPORT}."
    )
