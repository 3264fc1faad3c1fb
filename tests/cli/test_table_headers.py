"""One header per concept in every table: `matrices` counts a row's matrices, `width` is min(m, n), `gauss_e90`
the r₀.₉ of a Gaussian matrix of the same shape; `n`, `dim` and `random_90` are gone."""

from __future__ import annotations

from deltarank.analysis.results import (
    MatrixRecommendation,
    RecommendationResult,
    SparsityProfile,
)
from deltarank.analysis.results.columns import GAUSS_E90, MATRICES, WIDTH
from deltarank.analysis.results.merge import MergeGeometry, ModuleMerge
from deltarank.cli import extract, intruders, placement, recommend, similarity, spectrum
from deltarank.figures import tables
from deltarank.figures.recommendation import recommendation_table
from tests.figures.synthetic import (
    extract_result,
    intruder_result,
    placement_result,
    planted_result,
    similarity_result,
    with_sparsity,
)

GONE = {"n", "dim", "random_90", "rank/n"}


def _recommendation() -> RecommendationResult:
    matrices = tuple(
        MatrixRecommendation(
            f"model.layers.{layer}.self_attn.q_proj.weight", layer, "q_proj", (16, 16), "dense", 4, 16, 1.0,
            128, 1.0, 0.9, 0.3, (0.5, 0.9, 1.0),
        )
        for layer in range(3)
    )  # fmt: skip
    return RecommendationResult(
        "base", "tuned", "energy", 0.9, None, None, 4, 8, 384, 0.9, None, None, "cpu", "float32", matrices
    )


def _merge() -> MergeGeometry:
    module = ModuleMerge("q_proj", 3, 4.0, ((1.0, 0.5), (0.5, 1.0)), ((0.0, 0.2), (0.2, 0.0)), 0.1, (), ())
    return MergeGeometry(("a", "b", "c"), 4, 0.2, (), 0, (module,))


def _header(text: str) -> list[str]:
    return next(line.split() for line in text.splitlines() if line.startswith("module"))


def test_the_terminal_tables_count_matrices_as_matrices() -> None:
    texts = {
        "spectrum": spectrum.format_table(planted_result("runs/full", {"q_proj": 20})),
        "intruders": intruders.format_table(intruder_result("full", 0.2)),
        "similarity": similarity.format_table(similarity_result()),
        "merge": similarity.format_merge_table(_merge()),
        "extract": extract.format_table(extract_result()),
        "recommend": recommend.format_table(_recommendation()),
        "placement": placement.format_table(placement_result()),  # one table per size, then σ changes
    }
    for name, text in texts.items():
        headers = [line.split() for line in text.splitlines() if line.startswith("module")]
        assert headers and all(h[:2] == ["module", MATRICES] for h in headers), (name, headers)
        assert not any(GONE & set(h) for h in headers), (name, headers)
    assert _header(texts["spectrum"]) == ["module", MATRICES, "energy_90", "noise_floor", GAUSS_E90, WIDTH]
    assert _header(texts["intruders"])[:3] == ["module", MATRICES, "intruders"]
    assert texts["spectrum"].splitlines()[2].split()[:2] == ["q_proj", "1"]  # one layer: the count


def test_the_compare_tables_name_each_concept_once() -> None:
    full = with_sparsity(
        planted_result("runs/full", {"q_proj": 20}), lambda m: SparsityProfile(0.1, 0.2, 0.3, 0.4)
    )
    spectra = tables.compare_table([full])
    assert spectra.columns[:3] == ("module", WIDTH, GAUSS_E90) and "full rank/width" in spectra.columns
    assert spectra.to_csv().splitlines()[0].startswith("module,width,gauss_e90,")
    others = [
        tables.intruder_table([intruder_result("full", 0.2)]),
        tables.similarity_table([similarity_result()]),
        tables.extract_table([extract_result()]),
        tables.placement_table([placement_result()]),
        recommendation_table([_recommendation()]),
    ]
    for table in [spectra, *others]:
        assert not GONE & {c.split()[-1] for c in table.columns}, table.columns
    for table in others:
        assert table.columns[:2] == ("module", MATRICES), table.columns
        assert table.to_csv().startswith("module,matrices,")
