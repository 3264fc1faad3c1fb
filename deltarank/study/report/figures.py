"""The figures of the spectra a study kept and of its merge geometry (study.json `subspace.merge`), drawn by the
figures package from the files alone, into DIR/figures/."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from deltarank.study.measure.spectra import read_run_spectra

FIGURES_DIR = "figures"  # DIR/figures/: every figure of a study (report.md links them from there)


def render_run_figures(
    document: Mapping[str, Any],
    study_dir: Path,
    figures_dir: Path,
    summary: Mapping[str, Any] | None = None,
    formats: Sequence[str] = ("pdf", "png"),
    overwrite: bool = True,
) -> list[Path]:
    """The figures of the spectra a study kept (spectra, ranks by layer, headline, rank over training) and,
    with a reproduction's summary, learning against forgetting, into `figures_dir` ([] when it kept none); and
    the merge geometry's heatmaps of each group of runs (`render_merge_figures`)."""
    from deltarank.figures.render import render_figures

    merged = render_merge_figures(document, study_dir, figures_dir, formats, overwrite)
    spectra = read_run_spectra(study_dir, document["runs"])
    results = [result for found in spectra.values() for result in found]
    if not results:
        return merged
    return merged + render_figures(
        results, figures_dir, summary=summary, formats=formats, overwrite=overwrite
    )


def render_merge_figures(
    document: Mapping[str, Any],
    study_dir: Path,
    figures_dir: Path,
    formats: Sequence[str] = ("pdf", "png"),
    overwrite: bool = True,
) -> list[Path]:
    """Per group of study.json's `subspace.merge`, the heatmaps of its merge file (what `deltarank plot --kind
    merge DIR/merge.json` draws), the runs named, as figures_dir/<group's figure>.<format>.

    Raises:
        OutputError: without `overwrite`, a figure file exists already.
    """
    from deltarank.analysis.results.similarity import SimilarityResult
    from deltarank.errors import OutputError
    from deltarank.figures.merge import plot_merge_geometry
    from deltarank.figures.save import parse_formats, save_figure

    written: list[Path] = []
    for group in ((document.get("subspace") or {}).get("merge") or {}).get("groups") or []:
        for fmt in [] if overwrite else parse_formats(formats):
            if (path := figures_dir / f"{group['figure']}.{fmt}").exists():
                raise OutputError(f"{path}: already exists (use --force to replace it)")
        result = SimilarityResult.from_json(study_dir / group["file"])
        figure = plot_merge_geometry(result, labels=group["runs"])
        written += save_figure(figure, figures_dir, group["figure"], formats)
    return written
