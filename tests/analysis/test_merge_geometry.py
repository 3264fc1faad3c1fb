"""Merge geometry of n deltas: the n × n overlap, TIES's sign conflicts and DARE's error, against hand-computed
answers and direct NumPy definitions (float64)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deltarank.analysis.maths.merging import (
    dare_errors,
    dare_squared_error_variance,
    dare_uniforms,
    expected_dare_squared_error,
    nway_sign_conflict,
    pairwise_sign_conflicts,
    trim_count,
    trimmed_signs,
)
from deltarank.analysis.results.merge import MatrixMerge, module_merges
from deltarank.analysis.tools.merge import MergeSettings, check_merge, matrix_merge
from deltarank.analysis.tools.similarity import phi_matrix
from deltarank.errors import OptionError
from tests.analysis.subspace_models import orthogonal

# Hand-built 2 × 3 deltas; at density 0.5 each keeps k = 3 entries (c keeps 4: |1| ties at its threshold).
A = [[3.0, -1.0, 0.5], [-2.0, 4.0, 0.1]]  # keeps (0,0)+ (1,0)− (1,1)+
B = [[1.0, 2.0, -5.0], [-3.0, -0.2, 6.0]]  # keeps (0,2)− (1,0)− (1,2)+
C = [[-2.0, 0.3, 1.0], [5.0, 1.0, -0.4]]  # keeps (0,0)− (0,2)+ (1,0)+ (1,1)+


def deltas(*rows: list[list[float]]) -> list[torch.Tensor]:
    return [torch.tensor(r, dtype=torch.float64) for r in rows]


def test_overlap_matrix_is_the_direct_definition() -> None:
    d, k = 40, 6
    vectors = [orthogonal(d, seed)[:, :10] for seed in (0, 1, 2)]
    mixed = torch.cat([vectors[0][:, :3], vectors[1][:, :7]], dim=1)
    vectors.append(torch.linalg.qr(mixed).Q)  # its first 3 columns span A's first 3
    table = phi_matrix(vectors, k)
    arrays = [v.numpy() for v in vectors]
    for a in range(4):
        for b in range(4):
            direct = np.sum((arrays[a][:, :k].T @ arrays[b][:, :k]) ** 2) / k
            assert table[a][b] == pytest.approx(direct, abs=1e-6)
    assert [table[a][a] for a in range(4)] == [1.0] * 4
    # The 4th set holds A's first 3 vectors and B's first 3 in its top 6: φ = (3 + ‖…‖²) / 6 ≥ 1/2.
    assert table[0][3] >= 0.5 - 1e-12


def test_trimmed_signs_keep_the_top_density_entries() -> None:
    a, b, c = deltas(A, B, C)
    assert trim_count(6, 0.5) == 3 and trim_count(6, 1e-9) == 1 and trim_count(6, 1.0) == 6
    assert trimmed_signs(a, 0.5).tolist() == [[1, 0, 0], [-1, 1, 0]]
    assert trimmed_signs(b, 0.5).tolist() == [[0, 0, -1], [-1, 0, 1]]
    assert trimmed_signs(c, 0.5).tolist() == [[-1, 0, 1], [1, 1, 0]]  # the tie at |1| keeps both
    zero_kept = trimmed_signs(torch.tensor([[0.0, 0.0], [0.0, 2.0]]), 1.0)
    assert zero_kept.tolist() == [[0, 0], [0, 1]]  # an entry that did not move has no sign


def test_pairwise_and_nway_sign_conflicts_by_hand() -> None:
    signs = [trimmed_signs(d, 0.5) for d in deltas(A, B, C)]
    table = pairwise_sign_conflicts(signs)
    # (A, B) share (1,0), both −: 0/1. (A, C) share (0,0) ±, (1,0) ∓, (1,1) ++: 2/3. (B, C) share (0,2) and
    # (1,0), opposite in both: 2/2.
    assert table == (
        (0.0, 0.0, pytest.approx(2 / 3)),
        (0.0, 0.0, 1.0),
        (pytest.approx(2 / 3), 1.0, 0.0),
    )
    # Kept by two or more: (0,0) A+ C−, (1,0) A− B− C+, (1,1) A+ C+, (0,2) B− C+: three of four mixed.
    assert nway_sign_conflict(signs) == 0.75
    assert nway_sign_conflict(signs[:2]) == 0.0  # A and B agree on the one entry they share
    nothing = [torch.zeros(2, 3, dtype=torch.int8)] * 2
    assert pairwise_sign_conflicts(nothing)[0][1] is None and nway_sign_conflict(nothing) is None


def test_nway_conflict_matches_its_definition_on_random_deltas() -> None:
    rng = np.random.default_rng(3)
    values = [rng.standard_normal((30, 20)) for _ in range(4)]
    signs = [trimmed_signs(torch.from_numpy(v), 0.3) for v in values]
    kept = []
    for v in values:  # direct: the top ⌊0.3·N⌋ |v| (no ties in continuous data)
        order = np.argsort(-np.abs(v).ravel())[: int(0.3 * v.size)]
        mask = np.zeros(v.size, dtype=bool)
        mask[order] = True
        kept.append(np.where(mask.reshape(v.shape), np.sign(v), 0))
    stack = np.stack(kept)
    multi = (stack != 0).sum(axis=0) >= 2
    mixed = (stack > 0).any(axis=0) & (stack < 0).any(axis=0)
    assert [s.numpy().tolist() for s in signs] == [k.astype(int).tolist() for k in kept]
    assert nway_sign_conflict(signs) == pytest.approx(mixed.sum() / multi.sum(), abs=1e-12)
    both = (stack[0] != 0) & (stack[1] != 0)
    direct = np.sum(both & (stack[0] != stack[1])) / both.sum()
    assert pairwise_sign_conflicts(signs)[0][1] == pytest.approx(direct, abs=1e-12)


def test_dare_error_is_its_definition_on_the_same_mask() -> None:
    rng = np.random.default_rng(5)
    values = [rng.standard_normal((24, 16)) for _ in range(3)]
    drops = (0.3, 0.5, 0.9)
    draws = [dare_uniforms((24, 16), (7, 11, index)) for index in range(3)]
    errors, merged = dare_errors(
        [torch.from_numpy(v) for v in values], drops, lambda index: torch.from_numpy(draws[index])
    )
    for slot, p in enumerate(drops):
        residuals = []
        for index, x in enumerate(values):
            dared = np.where(draws[index] >= p, x / (1 - p), 0.0)  # DARE: drop with prob p, rescale the rest
            residuals.append(dared - x)
            direct = np.linalg.norm(dared - x) / np.linalg.norm(x)
            assert errors[slot][index] == pytest.approx(direct, rel=1e-12)
        direct_merged = np.linalg.norm(sum(residuals)) / np.linalg.norm(sum(values))
        assert merged[slot] == pytest.approx(direct_merged, rel=1e-12)
    # At p = 1/2 every entry contributes x² whether dropped (−x) or kept (2x − x): the error is exactly 1.
    assert errors[1] == pytest.approx([1.0, 1.0, 1.0], abs=1e-12)
    assert np.array_equal(draws[0], dare_uniforms((24, 16), (7, 11, 0)))  # the same mask on every run


@pytest.mark.parametrize("drop", [0.2, 0.5, 0.9])
def test_dare_squared_error_has_its_exact_expectation(drop: float) -> None:
    """E‖DARE(X) − X‖²/‖X‖² = p/(1 − p); one draw on 10⁶ entries lies within 5 standard deviations of it
    (the variance from `dare_squared_error_variance`), and √ of it near √(p/(1 − p))."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1000, 1000)) * rng.uniform(0.1, 2.0, (1000, 1))  # uneven row scales
    errors, _ = dare_errors(
        [torch.from_numpy(x)], (drop,), lambda _: torch.from_numpy(dare_uniforms(x.shape, (0, 1, 2)))
    )
    squared = errors[0][0] ** 2
    expected = expected_dare_squared_error(drop)
    sd = np.sqrt(dare_squared_error_variance(x, drop))
    assert abs(squared - expected) < 5 * sd + 1e-12
    assert errors[0][0] == pytest.approx(np.sqrt(expected), rel=5 * sd / expected + 1e-12)


def test_dare_squared_error_variance_matches_repeated_draws() -> None:
    """The mean and variance of the squared error over 400 masks of one 20 × 10 matrix."""
    rng = np.random.default_rng(1)
    x, drop = rng.standard_normal((20, 10)), 0.7
    draws = [
        dare_errors(
            [torch.from_numpy(x)], (drop,), lambda _, s=s: torch.from_numpy(dare_uniforms(x.shape, (s,)))
        )
        for s in range(400)
    ]
    squared = np.array([d[0][0][0] ** 2 for d in draws])
    variance = dare_squared_error_variance(x, drop)
    assert abs(squared.mean() - expected_dare_squared_error(drop)) < 5 * np.sqrt(variance / len(squared))
    assert squared.var() == pytest.approx(variance, rel=0.3)  # 400 draws: the sample variance within ~15%


def test_merged_dare_error_expectation() -> None:
    """E‖Σ DARE(X_a) − Σ X_a‖² / ‖Σ X_a‖² = p/(1 − p) · Σ‖X_a‖² / ‖Σ X_a‖² (independent masks)."""
    rng = np.random.default_rng(2)
    values = [rng.standard_normal((500, 400)) for _ in range(3)]
    values[1] = -0.5 * values[0] + 0.1 * values[1]  # partly cancelling deltas: the sum is smaller
    drop = 0.5
    _, merged = dare_errors(
        [torch.from_numpy(v) for v in values],
        (drop,),
        lambda index: torch.from_numpy(dare_uniforms((500, 400), (9, index))),
    )
    total = sum(values)
    ratio = sum(np.sum(v**2) for v in values) / np.sum(total**2)
    assert merged[0] ** 2 == pytest.approx(expected_dare_squared_error(drop) * ratio, rel=0.02)


def test_matrix_merge_and_module_medians() -> None:
    a, b, c = deltas(A, B, C)
    overlap = ((1.0, 0.2, 0.4), (0.2, 1.0, 0.6), (0.4, 0.6, 1.0))
    settings = MergeSettings(k=1, density=0.5, drops=(0.5,), seed=0)
    record = matrix_merge("m.weight", [a, b, c], overlap, 1, ["dense"] * 3, [2, 2, 2], settings)
    assert record.kept == (3, 3, 4) and record.sign_conflict_nway == 0.75
    assert record.dare_error == ((pytest.approx(1.0), pytest.approx(1.0), pytest.approx(1.0)),)
    other = MatrixMerge(
        ("dense",) * 3,
        (2, 2, 2),
        3,
        overlap,
        (1, 1, 1),
        record.sign_conflict,
        0.25,
        ((3.0, 3.0, None),),
        (1.0,),
    )
    (module,) = module_merges([("q_proj", record), ("q_proj", other)])
    assert module.matrices == 2 and module.k == 2.0 and module.sign_conflict_nway == 0.5
    assert module.overlap == overlap and module.dare_error[0][2] == pytest.approx(1.0)  # None left out
    assert MatrixMerge.from_dict(record.to_dict()) == record


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (MergeSettings(density=0.0), r"--density must lie in \(0, 1\], got 0"),
        (MergeSettings(density=1.5), r"--density must lie in \(0, 1\], got 1.5"),
        (MergeSettings(drops=(0.5, 1.0)), r"--dare-drops must each lie in \[0, 1\), got 1"),
        (MergeSettings(drops=(-0.1,)), r"--dare-drops must each lie in \[0, 1\), got -0.1"),
        (MergeSettings(k=0), "--merge-k must be at least 1"),
    ],
)
def test_bad_settings_are_refused(settings: MergeSettings, message: str) -> None:
    with pytest.raises(OptionError, match=message):
        check_merge(settings)
