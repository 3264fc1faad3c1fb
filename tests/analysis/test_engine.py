"""The streaming engine: many checkpoints in one pass, solvers, approximate labelling, torchrun split."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from deltarank.analysis.engine import spectrum, spectrum_many
from deltarank.errors import DeltarankError
from deltarank.io.safetensors_file import SafetensorsSource
from tests.planting import planted_delta, save_safetensors

NAMES = [f"model.layers.{i}.mlp.{p}.weight" for i in range(3) for p in ("up_proj", "down_proj")]
SHAPE = (24, 40)


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    """A base and three tuned checkpoints whose deltas have planted ranks 1, 2 and 3."""
    root = tmp_path_factory.mktemp("series")
    generator = torch.Generator().manual_seed(0)
    base = {n: torch.randn(SHAPE, generator=generator) for n in NAMES}
    save_safetensors(root / "base.safetensors", base)
    tuned = []
    for k in (1, 2, 3):
        sigma = [float(3 - i) for i in range(k)]
        tensors = {
            n: w + planted_delta(SHAPE, sigma, seed=i).float() for i, (n, w) in enumerate(base.items())
        }
        tuned.append(save_safetensors(root / f"checkpoint-{k}.safetensors", tensors))
    return root / "base.safetensors", tuned


def test_many_checkpoints_match_one_at_a_time(series: tuple[Path, list[Path]]) -> None:
    base, tuned = series
    together = spectrum_many(base, tuned, device="cpu")
    assert [r.tuned for r in together] == [str(t) for t in tuned]
    for k, (result, path) in enumerate(zip(together, tuned, strict=True), start=1):
        alone = spectrum(base, path, device="cpu")
        assert result.matrices == alone.matrices
        assert {m.ranks["noise_floor"] for m in result.matrices} == {k}


def test_each_base_tensor_is_read_once_for_all_checkpoints(
    series: tuple[Path, list[Path]], monkeypatch: pytest.MonkeyPatch
) -> None:
    base, tuned = series
    reads: list[tuple[str, str]] = []
    original = SafetensorsSource.read

    def counting(self: SafetensorsSource, name: str) -> torch.Tensor:
        reads.append((self.path.name, name))
        return original(self, name)

    monkeypatch.setattr(SafetensorsSource, "read", counting)
    spectrum_many(base, tuned, device="cpu")
    base_reads = [name for file, name in reads if file == "base.safetensors"]
    assert sorted(base_reads) == sorted(NAMES)  # 6 base reads for 3 checkpoints, not 18
    assert len(reads) == len(NAMES) * (1 + len(tuned))


def test_svd_and_gram_solvers_agree(series: tuple[Path, list[Path]]) -> None:
    base, tuned = series
    gram = spectrum(base, tuned[2], device="cpu", solver="gram")
    svd = spectrum(base, tuned[2], device="cpu", solver="svd")
    assert (gram.solver, svd.solver, gram.method) == ("gram", "svd", "exact")
    for a, b in zip(gram.matrices, svd.matrices, strict=True):
        assert a.singular_values[:3] == pytest.approx(b.singular_values[:3], rel=1e-5)
        assert a.ranks["energy_90"] == b.ranks["energy_90"]


def test_randomized_is_labelled_approximate(series: tuple[Path, list[Path]]) -> None:
    base, tuned = series
    result = spectrum(base, tuned[2], device="cpu", solver="randomized", top_k=5)
    assert (result.method, result.solver) == ("randomized", "randomized")
    assert all(len(m.singular_values) == 5 for m in result.matrices)
    assert result.matrices[0].singular_values[:3] == pytest.approx([3.0, 2.0, 1.0], rel=1e-4)
    with pytest.raises(DeltarankError, match="top-k"):
        spectrum(base, tuned[2], device="cpu", solver="randomized")


def test_torchrun_two_processes_give_the_single_process_result(
    series: tuple[Path, list[Path]], tmp_path: Path, master_port: int
) -> None:
    base, tuned = series
    single = tmp_path / "single.json"
    split = tmp_path / "split.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    common = [str(base), str(tuned[1]), "--device", "cpu"]
    subprocess.run(
        [sys.executable, "-m", "deltarank", "spectrum", *common, "-o", str(single)], check=True, env=env
    )
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-port",
        str(master_port),
    ]
    done = subprocess.run(
        [*torchrun, "-m", "deltarank", "spectrum", *common, "-o", str(split)],
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    one, two = json.loads(single.read_text()), json.loads(split.read_text())
    assert two["matrices"] == one["matrices"]
    assert len(two["matrices"]) == len(NAMES)
    assert not list(tmp_path.glob(".*cache*"))  # both ranks removed their resume caches
