"""The chance level of φ: two independent random subspaces of sizes i and j in R^d give φ(i, j) = max(i, j)/d in
expectation (E‖U_iᵀ V_j‖_F² = i·j/d), the line every measured φ is read against."""

from __future__ import annotations

import numpy as np
import pytest

from deltarank.analysis.results.similarity import chance_phi
from deltarank.analysis.tools.similarity import overlap_energy
from deltarank.figures.subspace import CHANCE_GID, plot_similarity_heatmaps
from tests.figures.synthetic import similarity_result


@pytest.mark.parametrize(("i", "j", "d"), [(16, 16, 576), (4, 16, 192), (8, 2, 64)])
def test_chance_phi_is_the_mean_phi_of_random_subspaces(i: int, j: int, d: int) -> None:
    import torch

    rng = np.random.default_rng(0)
    values = []
    for _ in range(400):
        u, _ = np.linalg.qr(rng.standard_normal((d, i)))
        v, _ = np.linalg.qr(rng.standard_normal((d, j)))
        energy = overlap_energy(torch.from_numpy(u), torch.from_numpy(v))[i - 1, j - 1].item()
        values.append(energy / min(i, j))
    sampled = float(np.mean(values))
    standard_error = float(np.std(values) / np.sqrt(len(values)))
    assert chance_phi(i, j, d) == pytest.approx(max(i, j) / d)
    assert abs(sampled - chance_phi(i, j, d)) < 4 * standard_error


def test_chance_is_capped_at_one_and_written_in_each_heatmap() -> None:
    assert chance_phi(64, 64, 32) == 1.0
    result = similarity_result()
    fig = plot_similarity_heatmaps(result)
    notes = [t.get_text() for ax in fig.axes for t in ax.texts if t.get_gid() == CHANCE_GID]
    assert notes and all(n.startswith("chance φ(") for n in notes)
    module = next(iter(result.by_module()))
    k = max(s for s in result.module_grid(module)[0] if s <= 16 and s in result.module_grid(module)[1])
    assert notes[0] == f"chance φ({k},{k}) = {result.module_chance(k)[module]:.2f}"
