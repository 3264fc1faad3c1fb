"""Open and pair checkpoints for the subspace analyses, then read one pair at a time.

`plan_pairs` opens BASE with `open_checkpoint` and TUNED either as a checkpoint or as a PEFT adapter directory,
and pairs them by canonical name. `with prefetched(jobs, load) as items:` runs a loader over a list of jobs
while a single background thread reads the next one, so memory holds one pair being decomposed plus at most
one being read; the thread is stopped when the block ends.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from deltarank.analysis.engine import PRECISIONS, resolve_device
from deltarank.analysis.loading import load_pair, prefetched
from deltarank.analysis.measure import Loaded, LoadedAdapter
from deltarank.analysis.results import SkippedTensor
from deltarank.errors import DeltarankError, InputError
from deltarank.io.adapter import AdapterSource
from deltarank.io.naming import Selection
from deltarank.io.pairing import Pair, plan_checkpoint
from deltarank.io.source import TensorSource, open_checkpoint

log = logging.getLogger(__name__)

ProgressHook = Callable[[int, int, str], None]
__all__ = ["PairPlan", "ProgressHook", "compute_setup", "load", "load_with_base", "plan_pairs", "prefetched"]


@dataclass(frozen=True)
class PairPlan:
    """A base checkpoint, a tuned checkpoint or adapter, and the pairs to analyse, in base order."""

    base: TensorSource
    tuned: TensorSource | AdapterSource
    tuned_path: str
    pairs: tuple[Pair, ...]
    skipped: tuple[SkippedTensor, ...]

    def by_name(self) -> dict[str, Pair]:
        """Pairs keyed by canonical name."""
        return {pair.name: pair for pair in self.pairs}


def plan_pairs(base: str | Path, tuned: str | Path, selection: Selection) -> PairPlan:
    """Open BASE and TUNED (a checkpoint or a PEFT LoRA/DoRA adapter directory) and pair their tensors.

    Raises:
        InputError: unreadable checkpoint or adapter.
        PairingError: no tensor in common.
        DeltarankError: nothing selected.
    """
    base_source = open_checkpoint(base)
    tuned_source, pairs, skipped = plan_checkpoint(base_source, tuned, selection)
    for item in skipped:
        log.warning("skipped %s: %s", item.name, item.reason)
    return PairPlan(base_source, tuned_source, str(tuned), tuple(pairs), tuple(skipped))


def compute_setup(device: str, precision: str) -> tuple[torch.device, torch.dtype]:
    """The compute device (auto/cpu/cuda) and dtype (float32/float64) of a run."""
    if precision not in PRECISIONS:
        raise DeltarankError(f"unknown precision {precision!r} (float32 or float64)")
    return resolve_device(device), PRECISIONS[precision]


def load(plan: PairPlan, pair: Pair, device: torch.device) -> Loaded:
    """Read one pair (stored dtypes, checked finite) onto `device` with the engine's `load_pair`."""
    return load_pair(pair, plan.base, plan.tuned, device)


def load_with_base(plan: PairPlan, pair: Pair, device: torch.device) -> tuple[Loaded, torch.Tensor]:
    """Read one pair and the base weight it modifies (for an adapter pair the base is read too)."""
    loaded = load(plan, pair, device)
    if not isinstance(loaded, LoadedAdapter):
        return loaded, loaded.base
    if loaded.base is not None:  # DoRA pairs already carry it
        return loaded, loaded.base
    base = plan.base.read(pair.base_key)
    if base.is_floating_point() and not bool(torch.isfinite(base).all()):
        raise InputError(plan.base.path, f"tensor {pair.base_key!r} contains NaN or Inf")
    return loaded, base.to(device)
