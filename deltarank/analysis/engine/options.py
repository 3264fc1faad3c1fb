"""`SpectrumOptions`: every option of a spectrum run in one frozen value, checked once, which also names the
run for the resume cache (its fingerprint)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from deltarank.analysis.engine.cache import fingerprint
from deltarank.analysis.engine.compute import resolve_device, resolve_precision
from deltarank.analysis.engine.distributed import local_device
from deltarank.analysis.engine.measure import MeasureSettings
from deltarank.analysis.maths.sparsity import DEFAULT_SPARSITY_ATOL
from deltarank.analysis.maths.svd import resolve_solver
from deltarank.errors import OptionError
from deltarank.io.naming import Selection

DEFAULT_THRESHOLDS = (0.5, 0.8, 0.9, 0.95, 0.99)  # the width-aware statistics report each


@dataclass(frozen=True)
class SpectrumOptions:
    """How a spectrum run computes.

    Attributes:
        device: auto, cpu, cuda or cuda:N.
        precision: float32 or float64; both tensors are upcast to it before subtracting.
        include: Regex of tensor names to analyse instead of the default selection (transformer-block 2-D
            weights); it replaces the default, it does not add to it.
        exclude: Regex of tensor names to leave out.
        thresholds: Energy thresholds τ of the energy ranks (keys `energy_<percent>`), each in (0, 1].
        solver: auto, svd, gram (exact) or randomized (approximate top-k, needs `top_k`).
        top_k: Number of singular values for the randomized solver.
        workers: CPU decompositions run at once by the Gram solver; None picks one per core, at most
            `deltarank.analysis.engine.schedule.MAX_WORKERS` (each holds one delta and its Gram matrix).
        quantization_error: For an adapter trained on a quantized base (QLoRA): also the quantisation error
            and the total change of each weight (None: yes for such adapters; True: required; False: no).
        allow_different_base: Analyse a TUNED whose config describes another architecture than BASE's
            (refused otherwise; `deltarank.io.architecture`). It changes no record, so not the fingerprint.
        sparsity_atol: Absolute tolerance of the sparsity profile's `within_atol` share (|Δw| ≤ atol), ≥ 0;
            None leaves the profile out (no counting pass).
    """

    device: str = "auto"
    precision: str = "float32"
    include: str | None = None
    exclude: str | None = None
    thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS
    solver: str = "auto"
    top_k: int | None = None
    workers: int | None = None
    quantization_error: bool | None = None
    allow_different_base: bool = False
    sparsity_atol: float | None = DEFAULT_SPARSITY_ATOL

    def __post_init__(self) -> None:
        values = tuple(sorted({float(t) for t in self.thresholds}))
        if not values or any(not 0.0 < t <= 1.0 for t in values):
            raise OptionError(f"energy thresholds must lie in (0, 1], got {list(self.thresholds)}")
        object.__setattr__(self, "thresholds", values)
        resolve_precision(self.precision)
        if self.solver == "randomized" and not self.top_k:
            raise OptionError("the randomized solver needs --top-k K")
        if self.top_k is not None and self.solver != "randomized":
            raise OptionError(
                f"--top-k applies to --solver randomized only (the {self.solver} solver computes every σ); "
                "add --solver randomized or leave --top-k out"
            )
        if self.top_k is not None and self.top_k < 1:
            raise OptionError(f"--top-k must be at least 1, got {self.top_k}")
        if self.workers is not None and self.workers < 1:
            raise OptionError(f"--workers must be at least 1, got {self.workers}")
        if self.sparsity_atol is not None and not 0.0 <= self.sparsity_atol < math.inf:
            raise OptionError(f"--sparsity-atol must be a finite number ≥ 0, got {self.sparsity_atol}")

    @classmethod
    def of(cls, options: SpectrumOptions | None = None, **changes: Any) -> SpectrumOptions:
        """`options` (or the defaults) with some fields changed; an unknown name is an error."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise OptionError(
                f"unknown spectrum option(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})"
            )
        if "thresholds" in changes and isinstance(changes["thresholds"], Sequence):
            changes["thresholds"] = tuple(changes["thresholds"])
        return dataclasses.replace(options or cls(), **changes)

    @property
    def selection(self) -> Selection:
        """The tensor selection of `include` and `exclude`."""
        return Selection(include=self.include, exclude=self.exclude)

    @property
    def dtype(self) -> torch.dtype:
        """The compute dtype."""
        return resolve_precision(self.precision)

    def compute_device(self) -> torch.device:
        """The device this process computes on (its LOCAL_RANK GPU under torchrun)."""
        return local_device(resolve_device(self.device))

    def concrete_solver(self, device: torch.device) -> str:
        """The solver `auto` stands for on `device` at this precision."""
        return resolve_solver(self.solver, device, self.dtype)

    def ignored(self, device: torch.device) -> list[str]:
        """Options given that this run on `device` does not use (warned about, not refused: which solver
        `auto` picks depends on the machine)."""
        solver = self.concrete_solver(device)
        if self.workers is not None and (device.type != "cpu" or solver != "gram"):
            return [
                f"--workers {self.workers} is ignored: it applies to the CPU Gram solver, and this run uses "
                f"the {solver} solver on {device}"
            ]
        return []

    def measure_settings(self, device: torch.device) -> MeasureSettings:
        """How each delta is measured on `device`: the settings `measure` takes."""
        return MeasureSettings(
            self.dtype, self.thresholds, self.concrete_solver(device), self.top_k, self.sparsity_atol
        )

    def fingerprint(self, base: str | Path, tuned: Sequence[str | Path]) -> str:
        """A digest of the inputs (paths, sizes, modification times) and of every option that can change a
        record: the resolved device and solver included, the number of workers not."""
        device = self.compute_device()
        options = {
            "tuned": [str(t) for t in tuned],
            "device": str(device),
            "precision": self.precision,
            "include": self.include,
            "exclude": self.exclude,
            "thresholds": list(self.thresholds),
            "solver": self.concrete_solver(device),
            "top_k": self.top_k,
            "quantization_error": self.quantization_error,
            "sparsity_atol": self.sparsity_atol,
        }
        return fingerprint([str(base), *(str(t) for t in tuned)], options)
