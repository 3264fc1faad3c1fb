"""The streaming spectrum run: plan, load and prefetch, schedule, measure, cache, distribute."""

from deltarank.analysis.engine.options import DEFAULT_THRESHOLDS, SpectrumOptions
from deltarank.analysis.engine.run import spectrum, spectrum_many

__all__ = ["DEFAULT_THRESHOLDS", "SpectrumOptions", "spectrum", "spectrum_many"]
