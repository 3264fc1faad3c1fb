"""The plan of a run: open BASE once, pair it with each TUNED checkpoint or adapter, list what is skipped.

Spectrum and the subspace tools (intruders, similarity, extract) all start here.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from deltarank.errors import DeltarankError, OptionError
from deltarank.io.adapter import AdapterSource, is_adapter_dir
from deltarank.io.architecture import check_same_base
from deltarank.io.base import TensorSource
from deltarank.io.model_ref import local_path
from deltarank.io.naming import Selection
from deltarank.io.pairing import Pair, SkippedTensor, plan_checkpoint
from deltarank.io.source import open_checkpoint
from deltarank.io.standalone import StandaloneAdapter, is_standalone_adapter

# Tools other than spectrum compare deltas; a prompt-based or bottleneck adapter has none.
NOT_A_DELTA = "a prompt-based or bottleneck adapter changes no base weight, so it has no ΔW for this command"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Plan:
    """One tuned checkpoint or adapter and its pairs with the base, in base file order."""

    tuned_path: str
    source: TensorSource | AdapterSource | StandaloneAdapter
    pairs: tuple[Pair, ...]
    skipped: tuple[SkippedTensor, ...]

    def by_name(self) -> dict[str, Pair]:
        """Pairs keyed by canonical name."""
        return {pair.name: pair for pair in self.pairs}


def plan_run(
    base: str | Path,
    tuned: Sequence[str | Path],
    selection: Selection,
    quantization_error: bool | None = False,
    standalone: bool = False,
    allow_different_base: bool = False,
) -> tuple[TensorSource, list[Plan]]:
    """Open BASE and pair every TUNED (a checkpoint or a PEFT adapter directory) with it.

    With `standalone` (spectrum only), a standalone adapter (prompt-based or bottleneck, whose own matrices
    are analysed: they are not deltas) is accepted as BASE, TUNED being the same directory, and a bottleneck
    adapter as TUNED beside a model, which is then left unread. `quantization_error`: QLoRA adapters'
    quantisation records (None: when an adapter was trained on a quantized base; see
    `deltarank.io.pairing.plan_adapter`). A TUNED checkpoint whose config describes another architecture
    than BASE's is refused before pairing unless `allow_different_base` (`deltarank.io.architecture`).

    Raises:
        InputError: unreadable checkpoint or adapter.
        PairingError: no tensor in common, or not the same base model.
        DeltarankError: nothing selected.
    """
    local = local_path(base)
    if is_standalone_adapter(local):
        if not standalone:
            raise DeltarankError(f"{base}: {NOT_A_DELTA}; `deltarank spectrum {base}` reports its matrices")
        if quantization_error:
            raise OptionError(f"--quantization-error applies to QLoRA adapters; {base} is not one")
        return _standalone_plan(local, tuned, selection)
    base_source = open_checkpoint(local)
    for path in tuned:  # every TUNED is checked before any is paired or read
        tuned_local = local_path(path)
        if not is_adapter_dir(tuned_local) and not is_standalone_adapter(tuned_local):
            check_same_base(local, tuned_local, allow_different_base)
    plans = []
    for path in tuned:
        source, pairs, skipped = plan_checkpoint(base_source, path, selection, quantization_error)
        if isinstance(source, StandaloneAdapter) and not standalone:
            raise DeltarankError(f"{path}: {NOT_A_DELTA}; `deltarank spectrum {path}` reports its matrices")
        for item in skipped:
            log.warning("%s: skipped %s: %s", path, item.name, item.reason)
        plans.append(Plan(str(path), source, tuple(pairs), tuple(skipped)))
    return base_source, plans


def _standalone_plan(
    adapter_dir: Path, tuned: Sequence[str | Path], selection: Selection
) -> tuple[TensorSource, list[Plan]]:
    """`deltarank spectrum ADAPTER_DIR`: the adapter's own matrices (its weights file stands as the base)."""
    adapter = StandaloneAdapter(adapter_dir)
    if any(local_path(path) != adapter_dir for path in tuned):
        raise DeltarankError(
            f"{adapter_dir}: a {adapter.what} is analysed alone; give it as the only argument"
        )
    pairs = adapter.selected(selection)
    if not pairs:
        raise DeltarankError(
            f"no matrix of {adapter_dir} is selected for analysis (check --include/--exclude)"
        )
    return adapter.weights, [Plan(str(path), adapter, tuple(pairs), ()) for path in tuned]


def plan_one(
    base: str | Path, tuned: str | Path, selection: Selection, allow_different_base: bool = False
) -> tuple[TensorSource, Plan]:
    """`plan_run` for a single TUNED: the base source and its plan."""
    base_source, plans = plan_run(base, [tuned], selection, allow_different_base=allow_different_base)
    return base_source, plans[0]
