"""Draw and save a set of figures from result files: what `deltarank plot` runs, callable from Python.

The one place that decides which figure kinds exist, which inputs each needs, and the files they are saved as.
Each result goes to the figures of its family: spectra to spectrum/ranks/ratio/steps/sparsity, intruder results
to `intruders`, similarity results to `similarity` (and to `merge` when they hold the merge geometry of n
deltas), extract results to `energy`, placement results to `placement`, recommendations to `recommendation`; a
reproduction summary to `learning`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from deltarank.analysis.results import (
    ExtractResult,
    IntruderResult,
    PlacementResult,
    RecommendationResult,
    SimilarityResult,
    SpectrumResult,
)
from deltarank.analysis.results.base import ResultFile
from deltarank.errors import DeltarankError, OptionError, OutputError
from deltarank.figures.headline import plot_headline
from deltarank.figures.learning import load_summary, plot_learning_forgetting
from deltarank.figures.merge import plot_merge_geometry
from deltarank.figures.placement import plot_placement
from deltarank.figures.ranks import plot_ranks_by_layer
from deltarank.figures.recommendation import plot_recommendation
from deltarank.figures.runs import Run, final_runs, lora_rank_by_module, make_runs, result_labels
from deltarank.figures.save import parse_formats, save_figure
from deltarank.figures.sparsity import has_sparsity, plot_sparsity
from deltarank.figures.spectra import plot_spectra
from deltarank.figures.subspace import plot_intruders_by_layer, plot_retained_energy, plot_similarity_heatmaps
from deltarank.figures.training import (
    TrackedRun,
    can_plot_training,
    plot_rank_over_training,
    plot_tracked_ranks,
)

log = logging.getLogger(__name__)

# kind -> file stem; `all` draws every kind the inputs allow. `similarity`, `energy` and `placement` draw one
# figure per result file: with several, each stem gets `-<label>` (see `stems`).
FIGURES: dict[str, str] = {
    "spectrum": "spectra",
    "ranks": "ranks_by_layer",
    "ratio": "headline",
    "steps": "rank_over_training",
    "learning": "learning_forgetting",
    "intruders": "intruders_by_layer",
    "similarity": "similarity",
    "energy": "retained_energy",
    "sparsity": "sparsity",
    "placement": "placement",
    "merge": "merge_geometry",
    "recommendation": "recommendation",
}
PER_FILE_KINDS = ("similarity", "energy", "placement", "merge", "recommendation")
KINDS: tuple[str, ...] = (*FIGURES, "all")
# kind -> the result family it draws (kinds not listed take spectra or the summary).
FAMILY_OF_KIND: dict[str, type[ResultFile[Any]]] = {
    "intruders": IntruderResult,
    "similarity": SimilarityResult,
    "energy": ExtractResult,
    "placement": PlacementResult,
    "merge": SimilarityResult,
    "recommendation": RecommendationResult,
}
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class Inputs:
    """What one `plot` call draws from: results sorted by family, each with its label, and the summary."""

    runs: list[Run] = field(default_factory=list)
    intruders: list[tuple[str, IntruderResult]] = field(default_factory=list)
    similarity: list[tuple[str, SimilarityResult]] = field(default_factory=list)
    extracts: list[tuple[str, ExtractResult]] = field(default_factory=list)
    placements: list[tuple[str, PlacementResult]] = field(default_factory=list)
    recommendations: list[tuple[str, RecommendationResult]] = field(default_factory=list)
    summary: Mapping[str, Any] | None = None
    tracked: list[TrackedRun] = field(default_factory=list)

    def merges(self) -> list[tuple[str, SimilarityResult]]:
        """The labelled similarity results that hold a merge geometry (the `merge` figure's inputs)."""
        return [item for item in self.similarity if item[1].merge is not None]

    def of(self, kind: str) -> Sequence[tuple[str, ResultFile[Any]]]:
        """The labelled results of the family that `kind` draws (empty for spectrum kinds and `learning`)."""
        family = FAMILY_OF_KIND.get(kind)
        if kind == "merge":
            return self.merges()
        if family is IntruderResult:
            return self.intruders
        if family is SimilarityResult:
            return self.similarity
        if family is ExtractResult:
            return self.extracts
        if family is PlacementResult:
            return self.placements
        if family is RecommendationResult:
            return self.recommendations
        return []


def sort_inputs(
    results: Sequence[ResultFile[Any]],
    labels: Sequence[str] | None = None,
    summary: Mapping[str, Any] | None = None,
    tracked: Sequence[TrackedRun] = (),
) -> Inputs:
    """Results of any family, each to its family with its label: given per file in order, else derived from
    the tuned paths; names are made unique within a family (spectrum checkpoints of one run keep theirs).

    Raises:
        DeltarankError: the number of labels differs from the number of results, or an unknown result type.
    """
    result_labels(results, labels)  # one label per file, or none
    by_family: dict[type[ResultFile[Any]], list[int]] = {}
    for index, result in enumerate(results):
        if not isinstance(
            result,
            SpectrumResult
            | IntruderResult
            | SimilarityResult
            | ExtractResult
            | PlacementResult
            | RecommendationResult,
        ):
            raise DeltarankError(f"cannot plot a {type(result).__name__} ({result.SCHEMA})")
        by_family.setdefault(type(result), []).append(index)

    def labelled(family: type[ResultFile[Any]]) -> list[tuple[str, Any]]:
        chosen = [results[i] for i in by_family.get(family, [])]
        given = [labels[i] for i in by_family.get(family, [])] if labels else None
        return list(zip(result_labels(chosen, given), chosen, strict=True))

    spectra = [results[i] for i in by_family.get(SpectrumResult, [])]
    given = [labels[i] for i in by_family.get(SpectrumResult, [])] if labels else None
    return Inputs(
        runs=make_runs([r for r in spectra if isinstance(r, SpectrumResult)], given),
        intruders=labelled(IntruderResult),
        similarity=labelled(SimilarityResult),
        extracts=labelled(ExtractResult),
        placements=labelled(PlacementResult),
        recommendations=labelled(RecommendationResult),
        summary=summary,
        tracked=list(tracked),
    )


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
                raise OptionError(f"unknown figure kind {kind!r}; choose from {', '.join(KINDS)}")
            if kind and kind not in kinds:
                kinds.append(kind)
    return kinds or ["all"]


def why_not(kind: str, inputs: Inputs, lora_rank: int | None) -> str | None:
    """Why the inputs cannot make figure `kind`, or None when they can."""
    runs = inputs.runs
    if kind == "learning":
        return (
            None if inputs.summary is not None else "needs --summary summary.json from `deltarank reproduce`"
        )
    if kind == "merge" and not inputs.of(kind):
        return f"needs a {SimilarityResult.SCHEMA} result file with merge geometry (three or more TUNED, or --merge)"
    if kind in FAMILY_OF_KIND:
        family = FAMILY_OF_KIND[kind]
        return None if inputs.of(kind) else f"needs a {family.SCHEMA} result file"
    if kind == "steps" and inputs.tracked:
        return None
    if not runs:
        return f"needs a {SpectrumResult.SCHEMA} result file"
    if kind == "ratio":
        if all(run.is_adapter for run in runs):
            return "needs a full fine-tuning result (dense ΔW)"
        if not lora_rank_by_module(runs, lora_rank):
            return "needs a LoRA rank: give a LoRA result or --lora-rank R"
    if kind == "steps" and not can_plot_training(runs):
        return "needs two or more results of checkpoints (`.../checkpoint-<N>`) of one run"
    if kind == "sparsity" and not any(has_sparsity(run.result) for run in runs):
        return "needs spectrum results with a sparsity profile (written by a deltarank that records one)"
    return None


def stems(kind: str, inputs: Inputs) -> list[str]:
    """The file stems of figure `kind`: one, or for a per-file kind with several files `<stem>-<label>`."""
    per_file = kind in PER_FILE_KINDS
    items = inputs.of(kind)
    if not per_file or len(items) <= 1:
        return [FIGURES[kind]]
    return [
        f"{FIGURES[kind]}-{_UNSAFE.sub('_', label).strip('_') or index + 1}"
        for index, (label, _) in enumerate(items)
    ]


def planned(
    kind: str, inputs: Inputs, lora_rank: int | None, x_axis: str = "step"
) -> list[tuple[str, Callable[[], Figure]]]:
    """The figures of `kind` as (file stem, a function drawing it): one per kind, or one per file for the
    similarity heatmaps, the retained-energy curves and the placement shares."""
    if kind == "similarity":
        return [
            (stem, partial(plot_similarity_heatmaps, result))
            for stem, (_, result) in zip(stems(kind, inputs), inputs.similarity, strict=True)
        ]
    if kind == "energy":
        return [
            (stem, partial(plot_retained_energy, result))
            for stem, (_, result) in zip(stems(kind, inputs), inputs.extracts, strict=True)
        ]
    if kind == "placement":
        return [
            (stem, partial(plot_placement, result))
            for stem, (_, result) in zip(stems(kind, inputs), inputs.placements, strict=True)
        ]
    if kind == "recommendation":
        return [
            (stem, partial(plot_recommendation, result))
            for stem, (_, result) in zip(stems(kind, inputs), inputs.recommendations, strict=True)
        ]
    if kind == "merge":
        return [
            (stem, partial(plot_merge_geometry, result))
            for stem, (_, result) in zip(stems(kind, inputs), inputs.merges(), strict=True)
        ]
    return [(FIGURES[kind], partial(draw, kind, inputs, lora_rank, x_axis))]


def draw(kind: str, inputs: Inputs, lora_rank: int | None, x_axis: str = "step") -> Figure:
    """The one figure of a kind that draws all its inputs together. Figures comparing runs draw each run's
    final result; `steps` draws all."""
    runs, summary = inputs.runs, inputs.summary
    latest = final_runs(runs)
    if kind == "intruders" and inputs.intruders:
        labels = [label for label, _ in inputs.intruders]
        return plot_intruders_by_layer([r for _, r in inputs.intruders], labels)
    if kind == "spectrum":
        return plot_spectra(latest)
    if kind == "ranks":
        return plot_ranks_by_layer(latest, lora_rank=lora_rank)
    if kind == "ratio":
        return plot_headline(latest, lora_rank=lora_rank)
    if kind == "steps" and inputs.tracked:
        return plot_tracked_ranks(inputs.tracked, x_axis=x_axis, lora_rank=lora_rank)
    if kind == "steps":
        return plot_rank_over_training(list(runs), x_axis=x_axis, lora_rank=lora_rank)
    if kind == "learning" and summary is not None:
        return plot_learning_forgetting(summary)
    if kind == "sparsity":
        return plot_sparsity(latest)
    raise DeltarankError(f"cannot draw figure kind {kind!r}")


def render_figures(
    results: Sequence[ResultFile[Any]],
    out_dir: str | Path,
    *,
    kinds: str | Sequence[str] = "all",
    formats: str | Sequence[str] = ("pdf", "png"),
    labels: Sequence[str] | None = None,
    summary: Mapping[str, Any] | str | Path | None = None,
    lora_rank: int | None = None,
    x_axis: str = "step",
    overwrite: bool = True,
    tracked: Sequence[TrackedRun] = (),
) -> list[Path]:
    """Draw the asked figures from results (and a reproduction summary) and save them under `out_dir`.

    Args:
        results: Results of any family (`read_result`); each goes to the figures of its family. Spectrum
            checkpoints of one run share a label (see `runs.make_runs`).
        out_dir: Output directory, created when missing.
        kinds: Figure kinds (spectrum, ranks, ratio, steps, learning, intruders, similarity, energy, sparsity,
            placement, merge, recommendation) or `all`: every kind the inputs allow.
        formats: pdf, png and/or svg.
        labels: One name per result, in order (legends; file names of per-file figures); derived from the
            tuned paths when omitted.
        summary: The reproduction's summary (dict or path of `summary.json`), for the learning figure.
        lora_rank: LoRA rank r when no LoRA result is given.
        x_axis: `step` or `tokens` for the training figure.
        overwrite: Replace figure files that already exist; when False they are refused before any drawing.
        tracked: Rank lines of `train --track-rank` logs (`training.read_tracked_ranks`): the steps figure
            draws them instead of checkpoint results.

    Returns:
        The written files, figure by figure.

    Raises:
        DeltarankError: an explicitly asked figure cannot be made from the inputs, or nothing can.
    """
    data = load_summary(summary) if isinstance(summary, str | Path) else summary
    inputs = sort_inputs(results, labels, data, tracked)
    asked = parse_kinds(kinds)
    if "all" in asked:
        todo = [k for k in FIGURES if why_not(k, inputs, lora_rank) is None]
        for kind in (k for k in FIGURES if k not in todo):
            log.info("skipping figure %s: %s", kind, why_not(kind, inputs, lora_rank))
        if not todo:
            raise DeltarankError("nothing to plot: give result files and/or --summary")
    else:
        todo = asked
        for kind in todo:
            reason = why_not(kind, inputs, lora_rank)
            if reason:
                raise DeltarankError(f"figure {kind!r} {reason}")
    figures = [item for kind in todo for item in planned(kind, inputs, lora_rank, x_axis)]
    if not overwrite:
        existing = [
            p
            for stem, _ in figures
            for f in parse_formats(formats)
            if (p := Path(out_dir) / f"{stem}.{f}").exists()
        ]
        if existing:
            raise OutputError(f"{existing[0]}: already exists (use --force to replace it)")
    written: list[Path] = []
    for stem, make in figures:
        written += save_figure(make(), out_dir, stem, formats)
        log.info("wrote %s", stem)
    return written
