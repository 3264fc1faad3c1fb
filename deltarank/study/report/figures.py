"""The figures of the spectra a study kept, drawn by the figures package from the files alone."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from deltarank.study.measure.spectra import read_run_spectra


def render_run_figures(
    document: Mapping[str, Any],
    study_dir: Path,
    figures_dir: Path,
    summary: Mapping[str, Any] | None = None,
    formats: Sequence[str] = ("pdf", "png"),
    overwrite: bool = True,
) -> list[Path]:
    """The figures of the spectra a study kept (spectra, ranks by layer, headline, rank over training) and,
    with a reproduction's summary, learning against forgetting, into `figures_dir` ([] when it kept none)."""
    from deltarank.figures.render import render_figures

    spectra = read_run_spectra(study_dir, document["runs"])
    results = [result for found in spectra.values() for result in found]
    if not results:
        return []
    return render_figures(results, figures_dir, summary=summary, formats=formats, overwrite=overwrite)
