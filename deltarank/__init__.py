"""deltarank: spectral analysis of learned weight perturbations ΔW = W_tuned − W_base in language models.

The public API is imported lazily, so the command line starts fast and `import deltarank` stays cheap.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "spectrum": "deltarank.analysis.engine.run",
    "spectrum_many": "deltarank.analysis.engine.run",
    "SpectrumOptions": "deltarank.analysis.engine.options",
    "intruders": "deltarank.analysis.tools.intruders",
    "placement": "deltarank.analysis.tools.placement",
    "similarity": "deltarank.analysis.tools.similarity",
    "extract": "deltarank.analysis.tools.extract",
    "SpectrumResult": "deltarank.analysis.results.spectrum",
    "MatrixSpectrum": "deltarank.analysis.results.spectrum",
    "IntruderResult": "deltarank.analysis.results.intruders",
    "PlacementResult": "deltarank.analysis.results.placement",
    "SimilarityResult": "deltarank.analysis.results.similarity",
    "ExtractResult": "deltarank.analysis.results.extract",
    "SkippedTensor": "deltarank.io.pairing",
}

__all__ = [
    "ExtractResult",
    "IntruderResult",
    "MatrixSpectrum",
    "PlacementResult",
    "SimilarityResult",
    "SkippedTensor",
    "SpectrumOptions",
    "SpectrumResult",
    "__version__",
    "extract",
    "intruders",
    "placement",
    "similarity",
    "spectrum",
    "spectrum_many",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'deltarank' has no attribute {name!r}")
