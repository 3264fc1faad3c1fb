"""`deltarank similarity BASE T1 T2 T3`: the merge geometry of three real tiny checkpoints, checked against direct
NumPy definitions, and the two-delta output unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from safetensors.numpy import load_file

from deltarank.analysis.maths.merging import dare_uniforms
from deltarank.analysis.results.similarity import SimilarityResult
from deltarank.analysis.tools.merge import mask_entropy
from deltarank.cli import main
from tests.conftest import build_tiny_llama, take_sgd_steps

# The fields a two-delta similarity.json held before the merge geometry: other tools read them (`top` is
# `sizes` since deltarank.similarity/2, as the option --sizes names it).
OLD_FILE_KEYS = {
    "schema", "deltarank_version", "base", "tuned_a", "tuned_b", "side", "sizes", "device", "precision",
    "matrices", "skipped",
}  # fmt: skip
OLD_MATRIX_KEYS = {
    "name", "layer", "module", "shape", "kind_a", "kind_b", "available_a", "available_b", "tops_a", "tops_b",
    "grid", "diagonal",
}  # fmt: skip
Q_PROJ = "model.layers.0.self_attn.q_proj.weight"


@pytest.fixture
def tuned(tmp_path: Path) -> list[Path]:
    """Three fine-tunes of the tiny Llama (2 SGD steps on different token ranges), saved as safetensors."""
    paths = []
    for index, vocab in enumerate((128, 64, 100)):
        model = build_tiny_llama()
        take_sgd_steps(model, steps=2, lr=0.1, vocab=vocab)
        model.save_pretrained(tmp_path / f"t{index + 1}", safe_serialization=True)
        paths.append(tmp_path / f"t{index + 1}")
    return paths


def run(*args: object) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def weights(path: Path) -> dict[str, np.ndarray]:
    return load_file(str(path / "model.safetensors"))


def test_three_deltas_against_direct_definitions(
    tiny_model_dir: Path, tuned: list[Path], tmp_path: Path
) -> None:
    out, fig = tmp_path / "sim.json", tmp_path / "merge.png"
    args = ("similarity", tiny_model_dir, *tuned, "-o", out, "--device", "cpu", "--precision", "float64")
    code, stdout, stderr = run(*args, "--merge-k", "4", "--figure", fig)
    assert code == 0, stderr
    raw = json.loads(out.read_text())
    assert set(raw) == OLD_FILE_KEYS | {"merge"} and raw["schema"] == "deltarank.similarity/2"
    result = SimilarityResult.from_json(out)
    merge = result.merge
    assert (
        merge is not None and merge.tuned == tuple(str(t) for t in tuned) and result.tuned_b == str(tuned[1])
    )
    assert (merge.k, merge.density, merge.dare_drops, merge.seed) == (4, 0.2, (0.5, 0.9), 0)
    assert len(result.matrices) == 14  # 7 module types × 2 layers, every one changed by all three
    assert "n-way" in stdout and fig.stat().st_size > 0

    record = next(m for m in result.matrices if m.name == Q_PROJ)
    assert record.merge is not None and record.merge.k == 4 and record.merge.kinds == ("dense",) * 3
    base = weights(tiny_model_dir)[Q_PROJ].astype(np.float64)
    deltas = [weights(t)[Q_PROJ].astype(np.float64) - base for t in tuned]  # upcast, then subtract
    tops = [np.linalg.svd(d)[0][:, :4] for d in deltas]
    for a in range(3):
        for b in range(3):
            direct = np.sum((tops[a].T @ tops[b]) ** 2) / 4
            assert record.merge.overlap[a][b] == pytest.approx(direct, abs=1e-6)
    kept = []
    for d in deltas:  # TIES trim: the top ⌊0.2·N⌋ entries by |Δw|
        mask = np.zeros(d.size, dtype=bool)
        mask[np.argsort(-np.abs(d).ravel())[: int(0.2 * d.size)]] = True
        kept.append(np.where(mask.reshape(d.shape), np.sign(d), 0.0))
    stack = np.stack(kept)
    mixed = (stack > 0).any(axis=0) & (stack < 0).any(axis=0)
    assert record.merge.sign_conflict_nway == pytest.approx(
        mixed.sum() / ((stack != 0).sum(axis=0) >= 2).sum()
    )
    both = (stack[0] != 0) & (stack[2] != 0)
    assert record.merge.sign_conflict[0][2] == pytest.approx(
        np.sum(both & (stack[0] != stack[2])) / both.sum()
    )
    residuals = []
    for index, d in enumerate(deltas):
        u = dare_uniforms(d.shape, mask_entropy(0, Q_PROJ, index))
        residuals.append(np.where(u >= 0.9, d / 0.1, 0.0) - d)
        direct = np.linalg.norm(residuals[-1]) / np.linalg.norm(d)
        assert record.merge.dare_error[1][index] == pytest.approx(direct, rel=1e-9)
    assert record.merge.dare_error[0] == pytest.approx([1.0] * 3)  # p = 1/2: exactly 1
    merged = np.linalg.norm(sum(residuals)) / np.linalg.norm(sum(deltas))
    assert record.merge.dare_merged_error[1] == pytest.approx(merged, rel=1e-9)

    module = next(m for m in merge.modules if m.module == "q_proj")
    layers = [m.merge for m in result.matrices if m.module == "q_proj" and m.merge is not None]
    assert module.matrices == 2
    assert module.overlap[0][1] == pytest.approx(np.median([m.overlap[0][1] for m in layers]))
    assert module.dare_merged_error[1] == pytest.approx(np.median([m.dare_merged_error[1] for m in layers]))

    figures = tmp_path / "figures"
    code, stdout, stderr = run("plot", out, "-o", figures, "--format", "png")
    assert code == 0, stderr
    assert {p.name for p in figures.iterdir()} == {"similarity.png", "merge_geometry.png"}


def test_two_deltas_keep_the_old_output(tiny_model_dir: Path, tuned: list[Path], tmp_path: Path) -> None:
    plain, merged = tmp_path / "plain.json", tmp_path / "merged.json"
    args = ("similarity", tiny_model_dir, tuned[0], tuned[1], "--device", "cpu", "--sizes", "1,2,4")
    code, stdout, stderr = run(*args, "-o", plain)
    assert code == 0, stderr
    raw = json.loads(plain.read_text())
    assert set(raw) == OLD_FILE_KEYS and all(set(m) == OLD_MATRIX_KEYS for m in raw["matrices"])
    assert "n-way" not in stdout
    code, stdout, stderr = run(*args, "-o", merged, "--merge")
    assert code == 0, stderr
    with_merge = json.loads(merged.read_text())
    assert set(with_merge) == OLD_FILE_KEYS | {"merge"}
    assert all(set(m) == OLD_MATRIX_KEYS | {"merge"} for m in with_merge["matrices"])
    for old, new in zip(raw["matrices"], with_merge["matrices"], strict=True):
        assert {key: new[key] for key in OLD_MATRIX_KEYS} == old  # the φ part is the same numbers
        assert len(new["merge"]["overlap"]) == 2
    code, _, stderr = run(*args, "-o", tmp_path / "implied.json", "--density", "0.5")
    assert code == 0, stderr
    implied = SimilarityResult.from_json(tmp_path / "implied.json")
    assert implied.merge is not None and implied.merge.density == 0.5  # a merge option implies --merge


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--density", "1.5"), "--density must lie in (0, 1], got 1.5"),
        (("--density", "0"), "--density must lie in (0, 1], got 0"),
        (("--dare-drops", "0.5,1"), "--dare-drops must each lie in [0, 1), got 1"),
        (("--dare-drops", "0.5,x"), "expected comma-separated numbers"),
        (("--merge-k", "0"), "--merge-k must be at least 1"),
    ],
)
def test_bad_merge_options_are_one_line(
    tiny_model_dir: Path, tuned: list[Path], tmp_path: Path, extra: tuple[str, ...], message: str
) -> None:
    out = tmp_path / "sim.json"
    code, _, stderr = run("similarity", tiny_model_dir, *tuned, "-o", out, *extra)
    assert code == 2 and stderr.startswith("Error:") and message in stderr
    assert len(stderr.strip().splitlines()) == 1 and not out.exists()


@pytest.mark.parametrize("count", [0, 1])
def test_fewer_than_two_deltas_is_one_line(tiny_model_dir: Path, tmp_path: Path, count: int) -> None:
    code, _, stderr = run("similarity", *[tiny_model_dir] * count, "-o", tmp_path / "sim.json")
    assert code == 2 and stderr.startswith("Error:") and "two or more deltas" in stderr
    assert len(stderr.strip().splitlines()) == 1 and not (tmp_path / "sim.json").exists()
