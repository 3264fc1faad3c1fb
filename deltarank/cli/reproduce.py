"""`deltarank reproduce`: train full and LoRA, measure learning/forgetting, spectra, figures, report."""

from __future__ import annotations

import shutil
from pathlib import Path

import click

from deltarank.cli.options import device_option, output_option
from deltarank.io.atomic import check_output_dir, refuse_overlap


@click.command()
@click.option(
    "--quick/--long", default=True, show_default=True, help="Quick: minutes on a CPU; long: a GPU run."
)
@output_option("Run directory (runs, spectra, figures, summary.json, report.md).", default="runs/reproduce")
@click.option(
    "--resume", is_flag=True, help="Continue a stopped reproduction in OUTPUT (finished stages are kept)."
)
@click.option("--domain", type=click.Choice(["code", "math"]), default="code", show_default=True)
@device_option
@click.option("--model", default="smollm2-135m", show_default=True, help="Base model (name, GGUF or HF dir).")
@click.option(
    "--lora-rank", type=click.IntRange(min=1), default=16, show_default=True, help="LoRA rank r (α = 2r)."
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--max-steps", type=click.IntRange(min=1), default=None, help="Override the schedule (smoke runs)."
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
    far higher rank than LoRA, and LoRA forgets less. `--resume` continues a stopped run where it stopped."""
    from deltarank.reproduce.pipeline import ReproduceConfig
    from deltarank.reproduce.pipeline import reproduce as run
    from deltarank.train.models import resolve_model

    out_dir = Path(output)
    refuse_overlap(out_dir, [model])  # --force or --resume: never over the base model
    resolve_model(model)  # a missing model fails before anything is replaced
    if not resume:
        check_output_dir(out_dir, force)
        if force and out_dir.is_dir():
            shutil.rmtree(out_dir)

    config = ReproduceConfig(
        out_dir=out_dir,
        domain=domain,
        quick=quick,
        device=device,
        model=model,
        lora_r=lora_rank,
        seed=seed,
        max_steps=max_steps,
        subspace=subspace,
    )
    summary = run(config, echo=lambda line: click.echo(line, err=True))
    from deltarank.analysis.results.rank_claim import describe

    claim = summary["headline"]["rank_claim"]
    click.echo(
        f"Full fine-tuning's energy_90 ÷ LoRA's r: {describe(claim)}; rank claim (10–100×) {claim['verdict']}; "
        f"forgetting: full {summary['forgetting']['full']:+.4f}, LoRA {summary['forgetting']['lora']:+.4f} "
        f"(general-text loss increase). See {out_dir / 'report.md'}."
    )
