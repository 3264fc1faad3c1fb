"""`preview`: what a run of spectrum, intruders, similarity or extract would do, from the headers alone.

The plan (`deltarank.analysis.engine.plan.plan_run`) reads only safetensors headers, GGUF metadata and adapter
configs, never tensor data, so a preview of a 7B-sized sharded checkpoint takes a fraction of a second. It
lists the pairs that would be analysed (name, shape, stored dtypes, kind), those skipped and why, the number
of decompositions and an estimate of the peak memory. Skips that depend on the values (a ΔW that is exactly
zero, in similarity and extract) cannot be known from headers and are not listed.

The memory estimate is `deltarank.analysis.tools.memory.estimate_memory`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deltarank.analysis.engine.options import SpectrumOptions
from deltarank.analysis.engine.plan import Plan, plan_run
from deltarank.analysis.engine.run import CUDA_BATCH
from deltarank.analysis.engine.schedule import cpu_schedule
from deltarank.analysis.tools.extract import WithEmbeddings, _extract_one, _left_out, check_untied
from deltarank.analysis.tools.memory import MemoryEstimate, PreviewPair, estimate_memory
from deltarank.analysis.tools.similarity import _match
from deltarank.errors import DeltarankError, OptionError
from deltarank.io.adapter import AdapterSource
from deltarank.io.pairing import AdapterPair, Pair, SkippedTensor
from deltarank.io.standalone import StandaloneAdapter, StoredMatrix

__all__ = [
    "COMMANDS",
    "Preview",
    "PreviewGroup",
    "preview",
]

COMMANDS = ("spectrum", "intruders", "similarity", "extract")
# Kinds whose ΔW is kept as factors (σ from an r × r core, never an m × n matrix); LoHa only while r² < min(m, n).
FACTORED_KINDS = frozenset({"lora", "qlora", "adalora", "vera", "lokr", "loha", "bottleneck_product"})


@dataclass(frozen=True)
class PreviewGroup:
    """The pairs and skips of one TUNED (a checkpoint or an adapter)."""

    tuned: str
    source: str  # "checkpoint", "<PEFT type> adapter" or "<kind> adapter, analysed alone"
    pairs: tuple[PreviewPair, ...]
    skipped: tuple[SkippedTensor, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "tuned": self.tuned,
            "source": self.source,
            "pairs": [pair.to_dict() for pair in self.pairs],
            "skipped": [{"name": s.name, "reason": s.reason} for s in self.skipped],
        }


@dataclass(frozen=True)
class Preview:
    """What a run would do, from the headers alone (`preview`).

    Attributes:
        command: spectrum, intruders, similarity or extract.
        base: BASE as given.
        device: The device the run would compute on.
        precision: The compute dtype name.
        solver: The concrete σ solver (spectrum), or `svd` (the subspace tools' thin SVDs).
        workers: Decompositions the run keeps going at once.
        groups: One per TUNED, in order.
        skipped: Skips of the run as a whole (similarity: what only one side changes).
        decompositions: SVDs (or Gram eigendecompositions) the run would compute, factor cores included.
        factored: How many of them are small factor-core decompositions (r × r, LoRA and the like).
        memory: The peak memory estimate of the tensors.
        process_bytes: Resident memory of this process when the preview was made (interpreter and libraries;
            the run adds `memory.peak_bytes` to about that), None where it cannot be read.
        seconds: Time the planning took.
    """

    command: str
    base: str
    device: str
    precision: str
    solver: str
    workers: int
    groups: tuple[PreviewGroup, ...]
    skipped: tuple[SkippedTensor, ...]
    decompositions: int
    factored: int
    memory: MemoryEstimate
    process_bytes: int | None
    seconds: float

    @property
    def pairs(self) -> tuple[PreviewPair, ...]:
        """Every pair of every group, in order."""
        return tuple(pair for group in self.groups for pair in group.pairs)

    @property
    def all_skipped(self) -> tuple[SkippedTensor, ...]:
        """Every skip: the groups' then the run's."""
        return (*(s for group in self.groups for s in group.skipped), *self.skipped)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the whole preview."""
        return {
            "command": self.command,
            "base": self.base,
            "device": self.device,
            "precision": self.precision,
            "solver": self.solver,
            "workers": self.workers,
            "groups": [group.to_dict() for group in self.groups],
            "skipped": [{"name": s.name, "reason": s.reason} for s in self.skipped],
            "decompositions": self.decompositions,
            "factored": self.factored,
            "memory": self.memory.to_dict(),
            "process_bytes": self.process_bytes,
            "seconds": self.seconds,
        }

    def to_text(self) -> str:
        """The table the command line prints: pairs per TUNED, skips, decompositions and memory."""
        lines = [
            f"Dry run of {self.command}: headers only; nothing was computed or written.",
            f"BASE  {self.base}",
        ]
        width = max([44, *(len(p.name) for p in self.pairs)])
        for group in self.groups:
            lines += ["", f"TUNED {group.tuned} ({group.source}): {len(group.pairs)} pairs"]
            header = f"  {'name':<{width}}  {'shape':>12}  {'base':>7}  {'tuned':>7}  kind"
            lines += [header, "  " + "-" * (len(header) - 2)]
            for p in group.pairs:
                shape = f"{p.shape[0]}×{p.shape[1]}"
                lines.append(
                    f"  {p.name:<{width}}  {shape:>12}  {p.base_dtype:>7}  {p.tuned_dtype:>7}  {p.kind}"
                )
            lines += _skip_lines(group.skipped)
        if self.skipped:
            lines += ["", "Run:", *_skip_lines(self.skipped)]
        full = self.decompositions - self.factored
        lines += [
            "",
            f"{len(self.pairs)} pairs, {len(self.all_skipped)} skipped; {self.decompositions} decompositions "
            f"({full} of full matrices, {self.factored} of factor cores) on {self.device} "
            f"({self.precision}, {self.solver}, {self.memory.in_flight})",
            f"Estimated peak memory: {_size(self.memory.peak_bytes)} of tensors"
            + (f" (largest pair {self.memory.shape[0]}×{self.memory.shape[1]})" if self.memory.shape else "")
            + (f" + about {_size(self.process_bytes)} for the process itself" if self.process_bytes else ""),
            f"Planned in {self.seconds:.3f} s",
        ]
        return "\n".join(lines)


def _skip_lines(skipped: Sequence[SkippedTensor]) -> list[str]:
    if not skipped:
        return []
    return [f"  skipped ({len(skipped)}):", *(f"    {s.name}: {s.reason}" for s in skipped)]


def _size(nbytes: int) -> str:
    if nbytes >= 1024**3:
        return f"{nbytes / 1024**3:.2f} GiB"
    return f"{nbytes / 1024**2:.1f} MiB"


def preview(
    base: str | Path,
    tuned: Sequence[str | Path],
    options: SpectrumOptions | None = None,
    *,
    command: str = "spectrum",
    embeddings: bool = False,
    **changes: Any,
) -> Preview:
    """What `command` would do with BASE and TUNED, from their headers (no tensor data is read).

    Args:
        base: Base checkpoint, as the command takes it.
        tuned: The TUNED checkpoints or adapters: any number for spectrum, one for intruders and extract, two
            or more (A, B, …) for similarity.
        options: Device, precision, include/exclude and, for spectrum, solver, top_k and workers.
        command: spectrum, intruders, similarity or extract.
        embeddings: extract's `embeddings` (the input embedding and the LM head extracted too).
        **changes: `SpectrumOptions` fields overriding `options`.

    Raises:
        DeltarankError: the same input errors the run would raise while planning.
    """
    if command not in COMMANDS:
        raise OptionError(f"unknown command {command!r} ({', '.join(COMMANDS)})")
    expected = {"intruders": 1, "extract": 1}.get(command)
    if expected is not None and len(tuned) != expected:
        raise OptionError(f"{command} takes {expected} TUNED, got {len(tuned)}")
    if command == "similarity" and len(tuned) < 2:
        raise OptionError(f"similarity takes two or more TUNED, got {len(tuned)}")
    opts = SpectrumOptions.of(options, **changes)
    device = opts.compute_device()
    start = time.perf_counter()
    selection = opts.selection
    if command == "extract" and embeddings:
        selection = WithEmbeddings(include=opts.include, exclude=opts.exclude)
    spectrum_run = command == "spectrum"
    quantization_error = opts.quantization_error if spectrum_run else False
    base_source, plans = plan_run(
        base,
        tuned,
        selection,
        quantization_error,
        standalone=spectrum_run,
        allow_different_base=opts.allow_different_base,
    )
    if command == "extract" and embeddings:
        check_untied(base_source)
    groups, run_skipped = _groups(command, plans, embeddings)
    seconds = time.perf_counter() - start
    solver = opts.concrete_solver(device) if command == "spectrum" else "svd"
    workers, batch = 1, 1
    if command == "spectrum" and device.type == "cpu" and solver == "gram":
        workers = cpu_schedule(opts.workers).workers
    if command == "spectrum" and device.type == "cuda":
        batch = CUDA_BATCH
    pairs = [pair for group in groups for pair in group.pairs]
    # intruders: thin SVDs of W and W' (full matrices, adapters merged); the others one decomposition per
    # listed pair (similarity lists both sides of each matrix).
    per_pair = 2 if command == "intruders" else 1
    factored = 0 if command == "intruders" else sum(pair.factored for pair in pairs)
    return Preview(
        command=command,
        base=str(base),
        device=str(device),
        precision=opts.precision,
        solver=solver,
        workers=workers,
        groups=groups,
        skipped=run_skipped,
        decompositions=per_pair * len(pairs),
        factored=factored,
        memory=estimate_memory(
            command, pairs, opts.dtype, solver, workers, batch, opts.top_k, opts.sparsity_atol is not None
        ),
        process_bytes=_resident_bytes(),
        seconds=seconds,
    )


def _groups(
    command: str, plans: list[Plan], embeddings: bool = False
) -> tuple[tuple[PreviewGroup, ...], tuple[SkippedTensor, ...]]:
    """The preview groups of the plans, with the command's own skips (as its run makes them)."""
    if command == "similarity":
        common, skipped = _match(plans)
        sides = tuple(_group(plan, [pairs[i] for pairs in common], []) for i, plan in enumerate(plans))
        return sides, tuple(skipped)
    groups = []
    for plan in plans:
        pairs, skipped = list(plan.pairs), list(plan.skipped)
        if (
            command == "extract"
            and isinstance(plan.source, AdapterSource)
            and plan.source.config.fan_in_fan_out
        ):
            raise DeltarankError(
                f"{plan.tuned_path}: fan_in_fan_out adapters cannot be re-extracted (nn.Linear layout only)"
            )
        if command == "extract":  # extract.py: embedding-like tensors left out (all without `embeddings`)
            for pair in (p for p in pairs if _left_out(p.name, embeddings)):
                outcome = _extract_one(pair, None, None, None)  # the run's own skip and reason
                assert isinstance(outcome, SkippedTensor)
                skipped.append(outcome)
            pairs = [p for p in pairs if not _left_out(p.name, embeddings)]
        groups.append(_group(plan, pairs, skipped))
    return tuple(groups), ()


def _group(plan: Plan, pairs: Sequence[Pair], skipped: Sequence[SkippedTensor]) -> PreviewGroup:
    source = plan.source
    label = f"{source.config.peft_type} adapter" if isinstance(source, AdapterSource) else "checkpoint"
    if isinstance(source, StandaloneAdapter):
        label = f"{source.what}, analysed alone"
    return PreviewGroup(
        plan.tuned_path, label, tuple(_preview_pair(p, source) for p in pairs), tuple(skipped)
    )


def _preview_pair(pair: Pair, source: Any) -> PreviewPair:
    return PreviewPair(
        pair.name, pair.shape, pair.base_dtype, pair.tuned_dtype, pair.kind, _rank(pair, source)
    )


def _rank(pair: Pair, source: Any) -> int | None:
    """The inner width r of a factored delta (r² for LoHa; a bottleneck's size), or None when it is dense."""
    if isinstance(pair, StoredMatrix) and pair.kind in FACTORED_KINDS:
        return min(source.weights.info(key).shape[0] for role, key in pair.keys if role == "down")
    if not isinstance(pair, AdapterPair) or pair.kind not in FACTORED_KINDS:
        return None
    rank = pair.module.rank
    if rank is None:
        shapes = source.shapes(pair.name) if isinstance(source, AdapterSource) else {}
        rank = min((min(s) for s in shapes.values() if len(s) == 2), default=1)
    if pair.kind == "loha":
        rank = rank * rank
        return rank if rank < min(pair.shape) else None  # deltas.py loha_form: dense when r² ≥ min(m, n)
    return rank


def _resident_bytes() -> int | None:
    """Resident memory of this process (Linux /proc), or None."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")
