"""Paper figures from spectrum results: each function takes results and returns a matplotlib `Figure`.

Plotting reads result files only: it never decomposes a matrix and never loads a model, so figures
regenerate in seconds. `save_figure` writes PDF/PNG/SVG deterministically; `render_figures` is what
`deltarank plot` runs.

    >>> from deltarank import SpectrumResult
    >>> from deltarank.figures import plot_headline, save_figure
    >>> fig = plot_headline([SpectrumResult.from_json("full.json"), SpectrumResult.from_json("lora.json")])
    >>> save_figure(fig, "figures", "headline", "pdf,png")
"""

from __future__ import annotations

from deltarank.figures.headline import plot_headline
from deltarank.figures.learning import load_summary, pareto_front, plot_learning_forgetting
from deltarank.figures.ranks import plot_ranks_by_layer
from deltarank.figures.render import FIGURES, render_figures
from deltarank.figures.save import save_figure
from deltarank.figures.spectra import plot_spectra
from deltarank.figures.tables import CompareTable, compare_table
from deltarank.figures.training import plot_rank_over_training

__all__ = [
    "FIGURES",
    "CompareTable",
    "compare_table",
    "load_summary",
    "pareto_front",
    "plot_headline",
    "plot_learning_forgetting",
    "plot_rank_over_training",
    "plot_ranks_by_layer",
    "plot_spectra",
    "render_figures",
    "save_figure",
]
