"""`spectrum` over 50 checkpoints in one call keeps memory and open files flat.

Each checkpoint is a tiny Llama-shaped model (hidden 32: 2 blocks of q/k/v/o, gate/up/down) plus a 4096 × 32
embedding that is never analysed, so a reader that loaded or mapped whole files would show in the memory
figures. The command runs in a subprocess (`tests.reliability.load_probe`) that samples, after every finished
matrix, resident memory, open file descriptors, open checkpoint files and checkpoint tensors still alive; the
same figures for 10 and for 50 checkpoints must match, with no growth per checkpoint.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from deltarank.analysis.engine.schedule import cpu_schedule
from tests.reliability.corpus import block_names, random_weights, tuned_from, write_safetensors

REPO = Path(__file__).resolve().parents[2]
HIDDEN, INTERMEDIATE, LAYERS = 32, 64, 2
CHECKPOINTS = 50
MATRICES = LAYERS * 7
MiB = 2**20
# Per checkpoint the run keeps only its results (14 records of 32 σ); whole checkpoints would be ≥ 0.5 MiB each.
RSS_SLACK = 12 * MiB


def tiny_model(seed: int) -> dict[str, torch.Tensor]:
    weights = random_weights(
        seed, block_names(LAYERS, ("q_proj", "k_proj", "v_proj", "o_proj")), (HIDDEN, HIDDEN)
    )
    mlp = [f"model.layers.{i}.mlp.{m}.weight" for i in range(LAYERS) for m in ("gate_proj", "up_proj")]
    weights |= random_weights(seed + 1, mlp, (INTERMEDIATE, HIDDEN))
    weights |= random_weights(
        seed + 2, [f"model.layers.{i}.mlp.down_proj.weight" for i in range(LAYERS)], (HIDDEN, INTERMEDIATE)
    )
    weights["model.embed_tokens.weight"] = torch.randn(
        4096, HIDDEN, generator=torch.Generator().manual_seed(seed)
    )
    return weights


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    root = tmp_path_factory.mktemp("many")
    base = tiny_model(0)
    tuned = [
        write_safetensors(root / f"c{i}.safetensors", tuned_from(base, seed=i, scale=0.01 * i))
        for i in range(1, CHECKPOINTS + 1)
    ]
    return write_safetensors(root / "base.safetensors", base), tuned


def probe(outdir: Path, base: Path, tuned: list[Path]) -> dict[str, dict[str, int]]:
    done = subprocess.run(
        [sys.executable, "-m", "tests.reliability.load_probe", str(outdir), str(base), *map(str, tuned)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONWARNINGS": "ignore", "OMP_WAIT_POLICY": "PASSIVE"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    figures: dict[str, dict[str, int]] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def test_fifty_checkpoints_in_one_call_keep_memory_and_files_flat(
    tmp_path: Path, checkpoints: tuple[Path, list[Path]]
) -> None:
    base, tuned = checkpoints
    few = probe(tmp_path / "few", base, tuned[:10])
    many = probe(tmp_path / "many", base, tuned)

    # Every checkpoint got its result, and nothing else was left behind (the resume cache is gone).
    assert sorted(p.name for p in (tmp_path / "many").iterdir()) == sorted(f"c{i}.json" for i in range(1, 51))
    last = json.loads((tmp_path / "many" / "c50.json").read_text())
    assert len(last["matrices"]) == MATRICES
    assert many["peak"]["samples"] == CHECKPOINTS * MATRICES

    # Tuned tensors alive: one per decomposition running, per pair read ahead (as many as workers) and the one
    # being read; plus the base tensor they share.
    workers = cpu_schedule().workers
    for run in (few, many):
        assert run["peak"]["tensors"] <= 2 * workers + 2
        assert run["peak"]["checkpoint_files"] == 1  # a file is open only while one tensor is read from it
        # Descriptors: none left open after the run, and only a bounded few at any moment during it (the file
        # the prefetch thread is reading, a cache record being written), however many checkpoints.
        assert run["after"]["fds"] == run["before"]["fds"]
        assert run["peak"]["fds"] <= run["before"]["fds"] + 3
    # (How many tensors are alive at a sample depends on how far the prefetch thread got, so the two runs are
    # held to the same bound above rather than to the same count.)

    # Peak memory does not grow with the number of checkpoints (beyond their small results).
    growth_few = few["peak"]["rss"] - few["before"]["rss"]
    growth_many = many["peak"]["rss"] - many["before"]["rss"]
    assert growth_many <= growth_few + RSS_SLACK, (growth_few / MiB, growth_many / MiB)


def test_a_full_batch_is_measured_before_the_next_pair_is_loaded() -> None:
    """The batching step must not hold a loaded pair back while the next one is read (one pair in flight)."""
    from types import SimpleNamespace

    from deltarank.analysis.engine.run import _batches

    pulled: list[int] = []

    def items():  # type: ignore[no-untyped-def]
        for i, shape in enumerate([(4, 4), (4, 4), (4, 4), (8, 4)]):
            pulled.append(i)
            yield SimpleNamespace(pair=SimpleNamespace(shape=shape)), i

    seen = []
    for batch in _batches(items(), size=1):  # type: ignore[arg-type]
        seen.append([loaded for _, loaded in batch])
        assert pulled[-1] == seen[-1][-1]  # nothing pulled beyond the batch being handed out
    assert seen == [[0], [1], [2], [3]]
    assert [[loaded for _, loaded in b] for b in _batches(items(), size=8)] == [[0, 1, 2], [3]]  # type: ignore[arg-type]
