"""Draw and save a set of figures from result files: what `deltarank plot` runs, callable from Python."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from deltarank.analysis.results import SpectrumResult
from deltarank.errors import DeltarankError, OutputError
from deltarank.figures.headline import plot_headline
from deltarank.figures.learning import load_summary, plot_learning_forgetting
from deltarank.figures.ranks import plot_ranks_by_layer
from deltarank.figures.runs import Run, final_runs, lora_rank_by_module, make_runs
from deltarank.figures.save import parse_formats, save_figure
from deltarank.figures.spectra import plot_spectra
from deltarank.figures.training import can_plot_training, plot_rank_over_training

log = logging.getLogger(__name__)

# kind -> file stem; `all` draws every kind the inputs allow.
FIGURES: dict[str, str] = {
    "spectrum": "spectra",
    "ranks": "ranks_by_layer",
    "ratio": "headline",
    "steps": "rank_over_training",
    "learning": "learning_forgetting",
}
KINDS: tuple[str, ...] = (*FIGURES, "all")


def parse_kinds(values: str | Sequence[str]) -> list[str]:
    """Kinds from `"ranks,ratio"` or repeated options; `all` expands later, against the inputs.

    Raises:
        DeltarankError: an unknown kind.
    """
    items = [values] if isinstance(values, str) else list(values)
    kinds: list[str] = []
    for item in items:
        for kind in (k.strip().lower() for k in item.split(",")):
            if kind and kind not in KINDS:
                raise DeltarankError(f"unknown figure kind {kind!r}; choose from {', '.join(KINDS)}")
            if kind and kind not in kinds:
                kinds.append(kind)
    return kinds or ["all"]


def why_not(
    kind: str, runs: Sequence[Run], summary: Mapping[str, Any] | None, lora_rank: int | None
) -> str | None:
    """Why the inputs cannot make figure `kind`, or None when they can."""
    if kind == "learning":
        return None if summary is not None else "needs --summary summary.json from `deltarank reproduce`"
    if not runs:
        return "needs at least one result file"
    if kind == "ratio":
        if all(run.is_adapter for run in runs):
            return "needs a full fine-tuning result (dense ΔW)"
        if not lora_rank_by_module(runs, lora_rank):
            return "needs a LoRA rank: give a LoRA result or --lora-rank R"
    if kind == "steps" and not can_plot_training(runs):
        return "needs two or more results of checkpoints (`.../checkpoint-<N>`) of one run"
    return None


def draw(
    kind: str,
    runs: Sequence[Run],
    summary: Mapping[str, Any] | None,
    lora_rank: int | None,
    x_axis: str = "step",
) -> Figure:
    """One figure of `kind`. Figures comparing runs draw each run's final result; `steps` draws all."""
    latest = final_runs(runs)
    if kind == "spectrum":
        return plot_spectra(latest)
    if kind == "ranks":
        return plot_ranks_by_layer(latest, lora_rank=lora_rank)
    if kind == "ratio":
        return plot_headline(latest, lora_rank=lora_rank)
    if kind == "steps":
        return plot_rank_over_training(list(runs), x_axis=x_axis, lora_rank=lora_rank)
    if kind == "learning" and summary is not None:
        return plot_learning_forgetting(summary)
    raise DeltarankError(f"cannot draw figure kind {kind!r}")


def render_figures(
    results: Sequence[SpectrumResult],
    out_dir: str | Path,
    *,
    kinds: str | Sequence[str] = "all",
    formats: str | Sequence[str] = ("pdf", "png"),
    labels: Sequence[str] | None = None,
    summary: Mapping[str, Any] | str | Path | None = None,
    lora_rank: int | None = None,
    x_axis: str = "step",
    overwrite: bool = True,
) -> list[Path]:
    """Draw the asked figures from results (and a reproduction summary) and save them under `out_dir`.

    Args:
        results: Spectrum results; checkpoints of one run share a label (see `runs.make_runs`).
        out_dir: Output directory, created when missing.
        kinds: Figure kinds (spectrum, ranks, ratio, steps, learning) or `all`: every kind the inputs allow.
        formats: pdf, png and/or svg.
        labels: One legend name per result; derived from the tuned paths when omitted.
        summary: The reproduction's summary (dict or path of `summary.json`), for the learning figure.
        lora_rank: LoRA rank r when no LoRA result is given.
        x_axis: `step` or `tokens` for the training figure.
        overwrite: Replace figure files that already exist; when False they are refused before any drawing.

    Returns:
        The written files, figure by figure.

    Raises:
        DeltarankError: an explicitly asked figure cannot be made from the inputs, or nothing can.
    """
    runs = make_runs(results, labels)
    data = load_summary(summary) if isinstance(summary, str | Path) else summary
    asked = parse_kinds(kinds)
    if "all" in asked:
        todo = [k for k in FIGURES if why_not(k, runs, data, lora_rank) is None]
        for kind in (k for k in FIGURES if k not in todo):
            log.info("skipping figure %s: %s", kind, why_not(kind, runs, data, lora_rank))
        if not todo:
            raise DeltarankError("nothing to plot: give result files and/or --summary")
    else:
        todo = asked
        for kind in todo:
            reason = why_not(kind, runs, data, lora_rank)
            if reason:
                raise DeltarankError(f"figure {kind!r} {reason}")
    if not overwrite:
        existing = [
            p
            for k in todo
            for f in parse_formats(formats)
            if (p := Path(out_dir) / f"{FIGURES[k]}.{f}").exists()
        ]
        if existing:
            raise OutputError(f"{existing[0]}: already exists (use --force to replace it)")
    written: list[Path] = []
    for kind in todo:
        fig = draw(kind, runs, data, lora_rank, x_axis)
        written += save_figure(fig, out_dir, FIGURES[kind], formats)
        log.info("wrote %s", FIGURES[kind])
    return written
