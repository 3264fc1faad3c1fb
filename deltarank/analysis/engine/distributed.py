"""Scale-out with torchrun: each rank analyses a share of the tensors, rank 0 gathers and writes.

`torchrun --nproc-per-node N -m deltarank spectrum ...` sets WORLD_SIZE/RANK/LOCAL_RANK; we join the process
group (gloo on CPU, NCCL on GPU) and use `gather_object`. No scheduler of our own.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


@dataclass(frozen=True)
class World:
    """This process's place among the ranks (rank 0 of 1 without torchrun)."""

    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        """True on the rank that writes results and prints."""
        return self.rank == 0

    def owns(self, index: int) -> bool:
        """Round-robin share: work item `index` belongs to this rank."""
        return index % self.size == self.rank


def launched_size() -> int:
    """WORLD_SIZE set by torchrun (1 when run directly)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def local_device(device: torch.device) -> torch.device:
    """Under torchrun on CUDA, each rank uses its LOCAL_RANK GPU."""
    if device.type == "cuda" and launched_size() > 1:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


@contextmanager
def joined(device: torch.device) -> Iterator[World]:
    """Join the torchrun process group for the duration of a run (no-op when not launched by torchrun)."""
    size = launched_size()
    if size <= 1 or dist.is_initialized():
        yield World(dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else World()
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend)
    try:
        yield World(dist.get_rank(), dist.get_world_size())
    finally:
        dist.destroy_process_group()


def gather(items: list[T], world: World) -> list[T] | None:
    """Concatenate every rank's items on rank 0 (None elsewhere); identity without torchrun."""
    if world.size == 1:
        return items
    collected: list[list[T]] | None = [[] for _ in range(world.size)] if world.is_main else None
    dist.gather_object(items, collected, dst=0)
    if collected is None:
        return None
    return [item for part in collected for item in part]
