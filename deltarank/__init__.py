"""deltarank: spectral analysis of learned weight perturbations ΔW = W_tuned − W_base in language models.

The public API is imported lazily, so the command line starts fast and `import deltarank` stays cheap.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "spectrum": "deltarank.analysis.engine",
    "spectrum_many": "deltarank.analysis.engine",
    "intruders": "deltarank.analysis.intruders",
    "similarity": "deltarank.analysis.subspace",
    "extract": "deltarank.analysis.extract",
    "SpectrumResult": "deltarank.analysis.results",
    "MatrixSpectrum": "deltarank.analysis.results",
    "SkippedTensor": "deltarank.analysis.results",
}

__all__ = [
    "MatrixSpectrum",
    "SkippedTensor",
    "SpectrumResult",
    "__version__",
    "extract",
    "intruders",
    "similarity",
    "spectrum",
    "spectrum_many",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'deltarank' has no attribute {name!r}")
