"""The CPU schedule: how cores are shared between concurrent decompositions and their BLAS threads."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_info

from deltarank.analysis.engine import spectrum
from deltarank.analysis.engine.loading import prefetched
from deltarank.analysis.engine.schedule import MAX_WORKERS, CpuSchedule, applied, cpu_schedule
from deltarank.errors import DeltarankError
from tests.planting import planted_delta, save_safetensors


@pytest.mark.parametrize(
    ("cores", "workers", "expected"),
    [
        (1, None, CpuSchedule(1, 1)),
        (2, None, CpuSchedule(2, 1)),
        (16, None, CpuSchedule(MAX_WORKERS, 16 // MAX_WORKERS)),
        (2, 1, CpuSchedule(1, 2)),
        (8, 3, CpuSchedule(3, 2)),
        (2, 6, CpuSchedule(6, 1)),
    ],
)
def test_cores_are_shared_between_workers_and_blas_threads(
    cores: int, workers: int | None, expected: CpuSchedule
) -> None:
    assert cpu_schedule(workers, cores=cores) == expected


def test_zero_workers_is_refused() -> None:
    with pytest.raises(DeltarankError, match="at least 1"):
        cpu_schedule(0, cores=2)


def numpy_blas_threads() -> set[int]:
    return {
        pool["num_threads"]
        for pool in threadpool_info()
        if pool["user_api"] == "blas" and "numpy" in pool["filepath"]
    }


def test_applied_sets_and_restores_blas_and_torch_threads() -> None:
    np.ones((2, 2)) @ np.ones((2, 2))  # make sure NumPy's BLAS is loaded
    blas_before, torch_before = numpy_blas_threads(), torch.get_num_threads()
    with applied(CpuSchedule(workers=3, blas_threads=1)):
        assert numpy_blas_threads() == {1}
        assert torch.get_num_threads() == 1
    assert numpy_blas_threads() == blas_before
    assert torch.get_num_threads() == torch_before


def test_prefetch_reads_at_most_depth_ahead() -> None:
    read: list[int] = []
    lock = threading.Lock()

    def load(job: int) -> int:
        with lock:
            read.append(job)
        return job

    consumed = []
    with prefetched(list(range(10)), load, depth=3) as items:
        for item in items:
            time.sleep(0.01)  # give the reader time to run ahead as far as it may
            with lock:
                assert max(read) <= item + 3  # the item handed out, and at most 3 read beyond it
            consumed.append(item)
    assert consumed == list(range(10))


def test_results_do_not_depend_on_the_number_of_workers(tmp_path: Path) -> None:
    """Concurrent decompositions give the same records, in plan order, as one at a time."""
    names = [f"model.layers.{i}.self_attn.{p}.weight" for i in range(3) for p in ("q_proj", "o_proj")]
    generator = torch.Generator().manual_seed(3)
    base = {n: torch.randn(48, 40, generator=generator) for n in names}
    tuned = {
        n: w + planted_delta((48, 40), [4.0, 2.0, 1.0][: 1 + i % 3], seed=i).float()
        for i, (n, w) in enumerate(base.items())
    }
    base_path = save_safetensors(tmp_path / "base.safetensors", base)
    tuned_path = save_safetensors(tmp_path / "tuned.safetensors", tuned)
    one = spectrum(base_path, tuned_path, device="cpu", workers=1)
    three = spectrum(base_path, tuned_path, device="cpu", workers=3)
    assert [m.name for m in three.matrices] == sorted(names)  # file order (safetensors sorts names)
    planted = {n: 1 + i % 3 for i, n in enumerate(names)}
    assert [m.ranks["noise_floor"] for m in three.matrices] == [planted[n] for n in sorted(names)]
    for a, b in zip(one.matrices, three.matrices, strict=True):
        assert a.ranks == pytest.approx(b.ranks, rel=1e-9)
        assert a.singular_values == pytest.approx(
            b.singular_values, rel=1e-9, abs=1e-12 * a.singular_values[0]
        )


def test_an_error_in_a_worker_stops_every_thread_before_the_call_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reader and the pool are shut down on the calling thread, not left to the garbage collector."""
    import gc

    from deltarank.analysis.engine import run as engine

    names = [f"model.layers.{i}.mlp.up_proj.weight" for i in range(8)]
    base = {n: torch.randn(16, 12, generator=torch.Generator().manual_seed(i)) for i, n in enumerate(names)}
    base_path = save_safetensors(tmp_path / "base.safetensors", base)
    tuned_path = save_safetensors(tmp_path / "tuned.safetensors", {n: w + 1 for n, w in base.items()})

    def failing(*args: object, **kwargs: object) -> object:
        raise RuntimeError("decomposition failed")

    monkeypatch.setattr(engine, "measure_batch", failing)
    gc.disable()  # a collector run must not be what stops the reader
    try:
        with pytest.raises(RuntimeError, match="decomposition failed"):
            spectrum(base_path, tuned_path, device="cpu", workers=2)
        ours = [t.name for t in threading.enumerate() if t.name.startswith("deltarank-")]
    finally:
        gc.enable()
    assert ours == []
