"""The result files of every analysis: one record/JSON base (`base`), one module per family."""

from deltarank.analysis.results.extract import ExtractResult, MatrixExtract
from deltarank.analysis.results.intruders import IntruderResult, MatrixIntruders
from deltarank.analysis.results.placement import MatrixPlacement, PlacementResult
from deltarank.analysis.results.read import FAMILIES, read_result
from deltarank.analysis.results.recommendation import MatrixRecommendation, RecommendationResult
from deltarank.analysis.results.similarity import MatrixSimilarity, SimilarityResult
from deltarank.analysis.results.sparsity import SparsityProfile
from deltarank.analysis.results.spectrum import MatrixSpectrum, SpectrumResult
from deltarank.io.pairing import SkippedTensor

__all__ = [
    "FAMILIES",
    "ExtractResult",
    "IntruderResult",
    "MatrixExtract",
    "MatrixIntruders",
    "MatrixPlacement",
    "MatrixRecommendation",
    "MatrixSimilarity",
    "MatrixSpectrum",
    "PlacementResult",
    "RecommendationResult",
    "SimilarityResult",
    "SkippedTensor",
    "SparsityProfile",
    "SpectrumResult",
    "read_result",
]
