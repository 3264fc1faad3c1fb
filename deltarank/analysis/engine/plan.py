"""The plan of a run: open BASE once, pair it with each TUNED checkpoint or adapter, list what is skipped.

Spectrum and the subspace tools (intruders, similarity, extract) all start here.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from deltarank.io.adapter import AdapterSource
from deltarank.io.base import TensorSource
from deltarank.io.naming import Selection
from deltarank.io.pairing import Pair, SkippedTensor, plan_checkpoint
from deltarank.io.source import open_checkpoint

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Plan:
    """One tuned checkpoint or adapter and its pairs with the base, in base file order."""

    tuned_path: str
    source: TensorSource | AdapterSource
    pairs: tuple[Pair, ...]
    skipped: tuple[SkippedTensor, ...]

    def by_name(self) -> dict[str, Pair]:
        """Pairs keyed by canonical name."""
        return {pair.name: pair for pair in self.pairs}


def plan_run(
    base: str | Path, tuned: Sequence[str | Path], selection: Selection
) -> tuple[TensorSource, list[Plan]]:
    """Open BASE and pair every TUNED (a checkpoint or a PEFT adapter directory) with it.

    Raises:
        InputError: unreadable checkpoint or adapter.
        PairingError: no tensor in common.
        DeltarankError: nothing selected.
    """
    base_source = open_checkpoint(base)
    plans = []
    for path in tuned:
        source, pairs, skipped = plan_checkpoint(base_source, path, selection)
        for item in skipped:
            log.warning("%s: skipped %s: %s", path, item.name, item.reason)
        plans.append(Plan(str(path), source, tuple(pairs), tuple(skipped)))
    return base_source, plans


def plan_one(base: str | Path, tuned: str | Path, selection: Selection) -> tuple[TensorSource, Plan]:
    """`plan_run` for a single TUNED: the base source and its plan."""
    base_source, plans = plan_run(base, [tuned], selection)
    return base_source, plans[0]
