"""Intruder dimensions (Shuttleworth et al. 2024, "LoRA vs Full Fine-tuning: An Illusion of Equivalence").

Among the top k left singular vectors u'_1 … u'_k of the tuned weights W' (not of ΔW), vector j is an
intruder when max_i |cos(u'_j, u_i)| < ε over all left singular vectors u_i of the base weights W. LoRA
produces them, full fine-tuning rarely does.

"All left singular vectors of W" are the min(m, n) columns of its thin SVD: for a square W a full orthonormal
basis of R^m (so max_i |cos| ≥ 1/√m always), for m > n the n vectors paired with a singular value (the
completion to a basis of R^m is not unique, so it is not used). Memory per matrix: W, W', the base's U and
the tuned top-k vectors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from deltarank import __version__
from deltarank.analysis.result_json import dump_result, read_result
from deltarank.analysis.results import SkippedTensor
from deltarank.analysis.stream import ProgressHook, compute_setup, load_with_base, plan_pairs, prefetched
from deltarank.analysis.vectors import kind_of, tuned_weight
from deltarank.errors import DeltarankError
from deltarank.io.naming import Selection, layer_index, module_type
from deltarank.io.pairing import Pair

SCHEMA = "deltarank.intruders/1"
DEFAULT_TOP_K = 10
DEFAULT_EPSILON = 0.5
EPSILON_SWEEP: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def max_cosines(base_u: torch.Tensor, tuned_u: torch.Tensor) -> torch.Tensor:
    """max_i |cos(u'_j, u_i)| for each tuned vector j; columns are unit vectors, so cos = u'_jᵀ u_i.

    Shapes: base_u (m, p), tuned_u (m, k) -> (k,).
    """
    return (tuned_u.mT @ base_u).abs().amax(dim=1)  # (k, p) -> (k,)


def count_intruders(max_cos: Sequence[float] | torch.Tensor, epsilon: float) -> int:
    """#{j : max_i |cos(u'_j, u_i)| < ε}."""
    return int(sum(1 for value in torch.as_tensor(max_cos).tolist() if value < epsilon))


def weight_intruders(
    base: torch.Tensor, tuned: torch.Tensor, top_k: int
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Max |cos| of each of the top-k left singular vectors of W' against all of W's, and W''s top-k σ.

    Shapes: base (m, n), tuned (m, n), both in the compute dtype -> k values each, k = min(top_k, m, n).
    """
    base_u = torch.linalg.svd(base, full_matrices=False)[0]  # (m, min(m, n))
    tuned_u, tuned_s, _ = torch.linalg.svd(tuned, full_matrices=False)
    k = min(top_k, tuned_s.numel())
    cos = max_cosines(base_u, tuned_u[:, :k])  # (k,)
    return tuple(float(c) for c in cos.cpu()), tuple(float(s) for s in tuned_s[:k].cpu())


def _sweep_key(epsilon: float) -> str:
    return f"{epsilon:g}"


@dataclass(frozen=True)
class MatrixIntruders:
    """Intruder dimensions of one tuned weight matrix."""

    name: str = field(metadata={"help": "Canonical (Hugging Face) name of the base weight."})
    layer: int | None = field(metadata={"help": "Transformer block index, None outside the blocks."})
    module: str = field(metadata={"help": "Module type, e.g. q_proj."})
    shape: tuple[int, int] = field(metadata={"help": "Shape of the base weight (stored orientation)."})
    kind: str = field(metadata={"help": "dense (two checkpoints), lora or dora (merged in float32)."})
    max_cos: tuple[float, ...] = field(
        metadata={"help": "max_i |cos(u'_j, u_i)| for the top-k tuned vectors."}
    )
    tuned_sigma: tuple[float, ...] = field(metadata={"help": "Top-k singular values of W'."})
    count: int = field(metadata={"help": "Intruders at the run's ε."})
    sweep: dict[str, int] = field(metadata={"help": "Intruder count per ε of the sweep (keys '0.1' …)."})

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        out = dict(self.__dict__)
        for key in ("shape", "max_cos", "tuned_sigma"):
            out[key] = list(out[key])
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MatrixIntruders:
        """Inverse of `to_dict`."""
        values = dict(data)
        for key in ("shape", "max_cos", "tuned_sigma"):
            values[key] = tuple(values[key])
        return cls(**values)


@dataclass(frozen=True)
class IntruderResult:
    """Intruder dimensions of every analysed matrix of one tuned model."""

    base: str = field(metadata={"help": "Base checkpoint path as given."})
    tuned: str = field(metadata={"help": "Tuned checkpoint or adapter path as given."})
    top_k: int = field(metadata={"help": "How many top singular vectors of W' are tested."})
    epsilon: float = field(metadata={"help": "Cosine threshold ε of `count`."})
    epsilons: tuple[float, ...] = field(metadata={"help": "The ε of the stored sweep."})
    device: str = field(metadata={"help": "Device the decompositions ran on."})
    precision: str = field(metadata={"help": "Compute dtype: float32 or float64."})
    matrices: tuple[MatrixIntruders, ...] = field(metadata={"help": "One record per matrix."})
    skipped: tuple[SkippedTensor, ...] = field(default=(), metadata={"help": "Selected but not analysed."})
    deltarank_version: str = field(default="", metadata={"help": "Version that wrote the file."})
    schema: str = SCHEMA

    def total(self, epsilon: float | None = None) -> int:
        """Intruders summed over matrices, at the run's ε or at an ε of the sweep."""
        if epsilon is None:
            return sum(m.count for m in self.matrices)
        return sum(count_intruders(m.max_cos, epsilon) for m in self.matrices)

    def by_layer(self, module: str, epsilon: float | None = None) -> dict[int, int]:
        """Intruder count per layer index of one module type (matrices outside the blocks left out)."""
        eps = self.epsilon if epsilon is None else epsilon
        return {
            m.layer: count_intruders(m.max_cos, eps)
            for m in self.matrices
            if m.module == module and m.layer is not None
        }

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict with the schema tag first."""
        head = {"schema": self.schema, "deltarank_version": self.deltarank_version}
        body = {k: v for k, v in self.__dict__.items() if k not in head}
        body |= {"epsilons": list(self.epsilons), "matrices": [m.to_dict() for m in self.matrices]}
        return head | body | {"skipped": [s.__dict__ for s in self.skipped]}

    def to_json(self, path: str | Path | None = None) -> str:
        """Serialise to JSON text; when `path` is given, also write it atomically."""
        return dump_result(self.to_dict(), path)

    @classmethod
    def from_json(cls, source: str | Path) -> IntruderResult:
        """Read a `deltarank.intruders/1` file (a path, or JSON text)."""
        data = read_result(source, SCHEMA)
        data["epsilons"] = tuple(data["epsilons"])
        data["matrices"] = tuple(MatrixIntruders.from_dict(m) for m in data["matrices"])
        data["skipped"] = tuple(SkippedTensor(**s) for s in data.get("skipped", []))
        return cls(**data)


def check_epsilons(epsilon: float, epsilons: Sequence[float], top_k: int) -> tuple[float, ...]:
    """Validate ε, the sweep and k; the sweep is returned sorted, de-duplicated."""
    sweep = tuple(sorted({float(e) for e in epsilons}))
    if any(not 0.0 < e <= 1.0 for e in (epsilon, *sweep)):
        raise DeltarankError(f"--epsilon values must lie in (0, 1], got {epsilon} and sweep {list(sweep)}")
    if top_k < 1:
        raise DeltarankError(f"--top-k must be at least 1, got {top_k}")
    return sweep


def intruders(
    base: str | Path,
    tuned: str | Path,
    *,
    top_k: int = DEFAULT_TOP_K,
    epsilon: float = DEFAULT_EPSILON,
    epsilons: Sequence[float] = EPSILON_SWEEP,
    include: str | None = None,
    exclude: str | None = None,
    device: str = "auto",
    precision: str = "float32",
    progress: ProgressHook | None = None,
) -> IntruderResult:
    """Intruder dimensions of every selected weight of TUNED against BASE (Shuttleworth et al. 2024).

    Vector j of the top-k left singular vectors of W' is an intruder when max_i |cos(u'_j, u_i)| < ε over all
    left singular vectors u_i of W. A LoRA/DoRA adapter is merged as W' = W + ΔW in the compute dtype.

    Args:
        base: Base checkpoint (.safetensors file, Hugging Face directory or GGUF).
        tuned: Tuned checkpoint, or a PEFT LoRA/DoRA adapter directory.
        top_k: How many top singular vectors of W' to test.
        epsilon: Cosine threshold ε of the headline count.
        epsilons: The ε sweep also stored per matrix.
        include: Regex of tensor names instead of the default (transformer-block 2-D weights).
        exclude: Regex of tensor names to leave out.
        device: auto, cpu or cuda.
        precision: float32 or float64.
        progress: Called as progress(done, total, name) after each matrix.

    Returns:
        An IntruderResult with one MatrixIntruders per matrix.
    """
    sweep = check_epsilons(epsilon, epsilons, top_k)
    dev, dtype = compute_setup(device, precision)
    plan = plan_pairs(base, tuned, Selection(include=include, exclude=exclude))
    records = []
    with prefetched(plan.pairs, lambda pair: (pair, *load_with_base(plan, pair, dev))) as loads:
        for index, (pair, loaded, base_w) in enumerate(loads):
            tuned_w = tuned_weight(loaded, base_w, dtype)  # (m, n)
            max_cos, tuned_sigma = weight_intruders(base_w.to(dtype), tuned_w, top_k)
            records.append(_record(pair, kind_of(loaded), max_cos, tuned_sigma, epsilon, sweep))
            del loaded, base_w, tuned_w
            if progress is not None:
                progress(index + 1, len(plan.pairs), pair.name)
    return IntruderResult(
        base=str(base),
        tuned=str(tuned),
        top_k=top_k,
        epsilon=epsilon,
        epsilons=sweep,
        device=str(dev),
        precision=precision,
        matrices=tuple(records),
        skipped=plan.skipped,
        deltarank_version=__version__,
    )


def _record(
    pair: Pair,
    kind: str,
    max_cos: tuple[float, ...],
    tuned_sigma: tuple[float, ...],
    epsilon: float,
    sweep: tuple[float, ...],
) -> MatrixIntruders:
    return MatrixIntruders(
        name=pair.name,
        layer=layer_index(pair.name),
        module=module_type(pair.name),
        shape=pair.shape,
        kind=kind,
        max_cos=max_cos,
        tuned_sigma=tuned_sigma,
        count=count_intruders(max_cos, epsilon),
        sweep={_sweep_key(e): count_intruders(max_cos, e) for e in sweep},
    )
