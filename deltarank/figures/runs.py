"""What the figures need to know about each result: its run label, its training step, its LoRA rank.

Everything here reads the result records (and, for tokens, a small `train_log.jsonl`); nothing decomposes a
matrix or loads a model.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deltarank.analysis.maths import ranks
from deltarank.analysis.results import MatrixSpectrum, SimilarityResult, SpectrumResult
from deltarank.analysis.results.base import ResultFile
from deltarank.analysis.results.medians import module_medians, module_quartiles, rank_of
from deltarank.analysis.results.spectrum import ADAPTER_KINDS
from deltarank.errors import DeltarankError, InputError, OptionError
from deltarank.io.run_directory import TRAIN_LOG, read_train_log

ENERGY_KEY = "energy_90"
ENERGY_TAU = 0.9
CHECKPOINT_RE = re.compile(r"^checkpoint[-_](\d+)$")
TOKEN_KEYS: tuple[str, ...] = ("tokens", "num_tokens", "tokens_seen", "num_input_tokens_seen")
# Path components that name a file format, not a run: skipped when deriving a run label.
_WEIGHT_SUFFIXES = frozenset({".safetensors", ".gguf", ".bin", ".pt"})
_GENERIC_NAMES = frozenset(
    {"model", "adapter_model", "adapter", "pytorch_model", "final", "merged", "output"}
)


@dataclass(frozen=True)
class Run:
    """One result file placed in a run series.

    Attributes:
        result: The spectrum result.
        label: The run's name in legends; results sharing a label form one series (checkpoints of a run).
        step: Training step from `checkpoint-<N>` in the tuned path; None for a final model.
        tokens: Tokens seen at that step, from `train_log.jsonl` when present.
    """

    result: SpectrumResult
    label: str
    step: int | None = None
    tokens: int | None = None

    @property
    def is_adapter(self) -> bool:
        """True when the result was computed from a PEFT adapter's saved tensors (any method)."""
        return bool(self.result.matrices) and all(m.kind in ADAPTER_KINDS for m in self.result.matrices)


def checkpoint_step(tuned: str) -> int | None:
    """The step N of the last `checkpoint-<N>` component of a tuned path, or None."""
    for part in reversed(Path(tuned).parts):
        match = CHECKPOINT_RE.match(part)
        if match:
            return int(match.group(1))
    return None


def run_parts(tuned: str) -> list[str]:
    """The meaningful components of a tuned path, outermost first, without checkpoint and file names.

    `runs/code/full/checkpoint-40` -> [runs, code, full]; `out/lora/adapter_model.safetensors` -> [out, lora];
    a weights file keeps its stem (`my-model.gguf` -> [my-model]); generic names (`final`) are dropped.
    """
    parts = []
    for part in Path(tuned).parts:
        stem = Path(part).stem if Path(part).suffix in _WEIGHT_SUFFIXES else part
        if CHECKPOINT_RE.match(stem) or stem.lower() in _GENERIC_NAMES or stem in {"", ".", "..", "/"}:
            continue
        parts.append(stem)
    return parts


def run_label(tuned: str) -> str:
    """A short run name from a tuned path: `runs/code/full/checkpoint-40` -> `full` (`run` when none)."""
    parts = run_parts(tuned)
    return parts[-1] if parts else "run"


def derived_labels(tuned: Sequence[str]) -> list[str]:
    """Run names for several tuned paths: the last path component, lengthened until different run
    directories get different names (`code/full` and `math/full`); checkpoints of one run share a name."""
    dirs = [tuple(run_parts(path)) or ("run",) for path in tuned]
    distinct = set(dirs)
    depth = 1
    while depth < max((len(d) for d in dirs), default=0) and len({d[-depth:] for d in distinct}) < len(
        distinct
    ):
        depth += 1
    return ["/".join(d[-depth:]) for d in dirs]


def tokens_at(tuned: str, step: int) -> int | None:
    """Tokens seen at `step` from a `train_log.jsonl` in the checkpoint directory or its run directory.

    Each line is a JSON object with a `step` and one of the keys in `TOKEN_KEYS`; the last record with a
    step at or below `step` gives the count. None when no log or no usable record is found.
    """
    for directory in (Path(tuned), Path(tuned).parent):
        log = directory / TRAIN_LOG
        if log.is_file():
            return _tokens_from_log(log, step)
    return None


def _tokens_from_log(log: Path, step: int) -> int | None:
    best: tuple[int, int] | None = None
    for record in read_train_log(log):
        if not isinstance(record.get("step"), int | float):
            continue
        count = next((record[k] for k in TOKEN_KEYS if isinstance(record.get(k), int | float)), None)
        if count is not None and record["step"] <= step and (best is None or record["step"] >= best[0]):
            best = (int(record["step"]), int(count))
    return None if best is None else best[1]


def make_runs(results: Sequence[SpectrumResult], labels: Sequence[str] | None = None) -> list[Run]:
    """Pair results with labels (given, or derived from the tuned path) and checkpoint steps.

    Raises:
        DeltarankError: the number of labels differs from the number of results.
    """
    if labels and len(labels) != len(results):
        raise OptionError(f"got {len(labels)} --label values for {len(results)} result files; give one each")
    names = list(labels) if labels else derived_labels([r.tuned for r in results])
    runs = []
    for i, result in enumerate(results):
        label = names[i]
        step = checkpoint_step(result.tuned)
        tokens = tokens_at(result.tuned, step) if step is not None else None
        runs.append(Run(result=result, label=label, step=step, tokens=tokens))
    return runs


def final_runs(runs: Sequence[Run]) -> list[Run]:
    """One run per label, in first-seen order: the final model, else the latest checkpoint.

    Figures that compare runs (spectra, ranks, headline) draw these; the training figure draws all.
    """
    chosen: dict[str, Run] = {}
    for run in runs:
        current = chosen.get(run.label)
        if current is None or _lateness(run) > _lateness(current):
            chosen[run.label] = run
    return list(chosen.values())


def _lateness(run: Run) -> float:
    return float("inf") if run.step is None else float(run.step)


def module_order(results: Sequence[SpectrumResult]) -> list[str]:
    """Module types in first-seen order over all results."""
    order: dict[str, None] = {}
    for result in results:
        for m in result.matrices:
            order.setdefault(m.module, None)
    return list(order)


def energy_rank(matrix: MatrixSpectrum, key: str = ENERGY_KEY) -> float:
    """The stored rank `key` of a matrix; for energy_90 missing from the record, r₀.₉ from its σ.

    r_τ = min k with Σ_{i≤k} σ_i² ≥ τ Σ_i σ_i² (Biderman et al. 2024, τ = 0.9): arithmetic on stored values.

    Raises:
        InputError: the rank is neither stored nor computable.
    """
    stored = matrix.ranks.get(key)
    if stored is not None:
        return float(stored)
    if key == ENERGY_KEY and matrix.singular_values and not matrix.approximate:
        return float(ranks.energy_rank(matrix.singular_values, ENERGY_TAU))
    raise InputError(matrix.name, f"result has no {key!r} rank")


def medians(result: SpectrumResult, key: str = ENERGY_KEY) -> dict[str, float]:
    """Median rank `key` per module type (energy_90 falls back to the σ when not stored)."""
    if key != ENERGY_KEY:
        return module_medians(result.matrices, rank_of(key))
    return module_medians(result.matrices, energy_rank)


def layer_quartiles(result: SpectrumResult) -> dict[str, tuple[float, float, float]]:
    """(first quartile, median, third quartile) of r₀.₉ over the layers of each module type."""
    return module_quartiles(result.matrices, energy_rank)


def lora_rank_by_module(runs: Sequence[Run], override: int | None = None) -> dict[str, int]:
    """The LoRA rank r per module type: `override` for all, else from the first adapter result given.

    Per-module `rank_pattern` makes r differ between modules; the largest r of a module type is used.
    Empty when neither an override nor an adapter result is available.
    """
    if override is not None:
        if override < 1:
            raise DeltarankError(f"--lora-rank must be a positive integer, got {override}")
        return {m: override for m in module_order([r.result for r in runs])}
    for run in runs:
        ranks: dict[str, int] = {}
        for m in run.result.matrices:
            if m.lora_rank is not None:
                ranks[m.module] = max(ranks.get(m.module, 0), int(m.lora_rank))
        if ranks:
            return ranks
    return {}


def display_labels(runs: Sequence[Run]) -> list[str]:
    """Legend labels, unique: a label shared by several runs gets its step (`full @ 40`) or an index."""
    counts: dict[str, int] = {}
    for run in runs:
        counts[run.label] = counts.get(run.label, 0) + 1
    out: list[str] = []
    for i, run in enumerate(runs):
        text = run.label
        if counts[run.label] > 1:
            text = f"{run.label} @ {run.step}" if run.step is not None else f"{run.label} (final)"
        if text in out:
            text = f"{text} #{i + 1}"
        out.append(text)
    return out


def result_labels(results: Sequence[ResultFile[Any]], labels: Sequence[str] | None = None) -> list[str]:
    """One unique name per result of any family: the given labels, else derived from the tuned paths (a
    similarity result: `A vs B`); a repeated name gets ` #<position>`.

    Raises:
        DeltarankError: the number of labels differs from the number of results.
    """
    if labels and len(labels) != len(results):
        raise OptionError(f"got {len(labels)} --label values for {len(results)} result files; give one each")
    if labels:
        names = list(labels)
    else:
        tuned = [str(getattr(r, "tuned", "")) for r in results if not isinstance(r, SimilarityResult)]
        derived = iter(derived_labels(tuned))
        names = [
            f"{run_label(r.tuned_a)} vs {run_label(r.tuned_b)}"
            if isinstance(r, SimilarityResult)
            else next(derived)
            for r in results
        ]
    out: list[str] = []
    for i, name in enumerate(names):
        out.append(f"{name} #{i + 1}" if name in out else name)
    return out


def as_runs(
    results: SpectrumResult | Sequence[SpectrumResult] | Sequence[Run], labels: Sequence[str] | None
) -> list[Run]:
    """Accept one result, a list of results, or prepared runs (what the plotting functions take)."""
    if isinstance(results, SpectrumResult):
        return make_runs([results], labels)
    items = list(results)
    if items and all(isinstance(item, Run) for item in items):
        return [item for item in items if isinstance(item, Run)]
    return make_runs([item for item in items if isinstance(item, SpectrumResult)], labels)
