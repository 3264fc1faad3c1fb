"""Functional rank: how many directions of a run's ΔW its learning and its drift need (#25 item 3).

Every ΔW the spectrum measures (each transformer-block weight matrix; `deltarank.analysis.engine.plan`) is formed
exactly, in float32, by its method's form (`deltarank.analysis.maths.deltas`: dense for full fine-tuning, the
factors for LoRA and the other PEFT methods) and decomposed once (`deltarank.analysis.maths.svd.delta_svd`).
The *cut* model at k sets every such weight to

    W_base + U_k Σ_k V_kᵀ    (the top k singular directions of its ΔW; all of them where it has fewer)

and keeps every other parameter as the run left it (a full fine-tune's embeddings and norms; an adapter run
has none). For each measure M of a model (the held-out loss: learning; the forgetting measure: drift),

    share_M(k) = (M(cut k) − M(base)) / (M(tuned) − M(base))

is the part of the run's change of M that the top k directions carry, with a 95% paired-bootstrap interval
over the evaluation sequences (`deltarank.evaluation.paired.paired_share`: evaluation noise, not training
noise). k₉₀ is the smallest k of the grid (0, 1, 2, 4, …, up to the largest rank of any ΔW) whose learning
share reaches 0.9. An energy rank counts the directions that hold 90% of ΔW's energy; k₉₀ counts the ones the
model's function needs, which can be far fewer when much of the energy is optimizer and mini-batch noise.

Memory: the base model, the tuned one (full fine-tuning) and the SVD factors of every ΔW (about three model
sizes): meant for the small models a study trains, not for streaming a 7B pair (the spectrum engine's job).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from deltarank.analysis.maths.svd import DeltaSVD
from deltarank.errors import DeltarankError

KS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
TARGET = 0.9
LEARNING = "learning"  # the measure k₉₀ is read from
# One model's measures by name: {"value": mean (None when it measured nothing), "sums": per-sequence sums,
# "counts": per-sequence token counts} (`deltarank.evaluation.loss.sequence_losses`'s parts).
Measured = Mapping[str, Mapping[str, Any]]
Measure = Callable[[Any], Measured]


@dataclass(frozen=True)
class WeightDelta:
    """The thin SVD of one weight's ΔW (float32, the weight's stored orientation) and the parameter it changes.

    Attributes:
        parameter: The model parameter's name (the base checkpoint's tensor name).
        svd: ΔW = U diag(σ) Vᵀ.
    """

    parameter: str
    svd: DeltaSVD

    @property
    def rank(self) -> int:
        """The number of singular directions held (min(m, n) for a dense ΔW, the factors' rank otherwise)."""
        return int(self.svd.s.numel())

    def top(self, k: int) -> torch.Tensor:
        """U_k diag(σ_k) V_kᵀ, the top k directions of ΔW (all of them when k ≥ rank). Shape (m, n)."""
        u, s, v = self.svd.u[:, :k], self.svd.s[:k], self.svd.v[:, :k]  # (m, k), (k,), (n, k)
        return (u * s) @ v.mT


def weight_deltas(base: str | Path, tuned: str | Path, device: torch.device) -> list[WeightDelta]:
    """Every transformer-block ΔW of `tuned` (a checkpoint or a peft adapter) against `base`, formed in float32
    by its method's form and decomposed on `device`.

    Raises:
        DeltarankError: `tuned` has no ΔW (a prompt-based or bottleneck adapter), or was trained on a
            quantized base (QLoRA: its cut model would need the 4-bit base).
    """
    from deltarank.analysis.engine.loading import load_pair
    from deltarank.analysis.engine.plan import plan_one
    from deltarank.analysis.maths.svd import delta_svd
    from deltarank.io.naming import Selection

    base_source, plan = plan_one(base, tuned, Selection())
    if any(getattr(pair, "quantization", None) is not None for pair in plan.pairs):
        raise DeltarankError(f"{tuned}: trained on a quantized base; its functional rank is not measured")
    found = []
    for pair in plan.pairs:
        delta = load_pair(pair, base_source, plan.source, device).delta(torch.float32)
        found.append(WeightDelta(pair.base_key, delta_svd(delta)))
    return found


def rank_grid(deltas: Sequence[WeightDelta], ks: Sequence[int] = KS) -> list[int]:
    """0, the ks below the largest rank of any ΔW, and that rank (where every ΔW is whole)."""
    top = max((d.rank for d in deltas), default=0)
    return sorted({0, *(k for k in ks if 0 < k < top), top})


@torch.no_grad()
def functional_rank(
    host: Any,
    base_weights: Mapping[str, torch.Tensor],
    deltas: Sequence[WeightDelta],
    measure: Measure,
    base: Measured | None,
    tuned: Measured,
    ks: Sequence[int] = KS,
    target: float = TARGET,
) -> dict[str, Any]:
    """The measures of the cut model at every k of the grid and their shares of the run's change.

    Args:
        host: The model the cuts are made in (float32, eval mode): the tuned model of a full fine-tune, the
            base model of an adapter run. Its weights change during the measurement and are restored after.
        base_weights: W_base (float32, on the host's device) of every parameter in `deltas`.
        deltas: The ΔW of the run (`weight_deltas`).
        measure: model -> its measures (`Measured`).
        base: The base model's measures; None: the cut at k = 0 is the base model (an adapter run's host,
            whose other parameters are the base's), and its measures stand for them.
        tuned: The tuned model's measures (as the run is evaluated: an adapter on its base).
        ks: The numbers of directions to keep (`rank_grid` adds 0 and the largest rank).
        target: The learning share k₉₀ must reach.

    Returns:
        `functional_rank_section`'s section.
    """
    params = dict(host.named_parameters())
    current = _weights_of(host, deltas, copy=False)
    originals = {  # what to restore: a copy of the weights the cuts replace (none where they are W_base)
        name: base_weights[name] if torch.equal(weight, base_weights[name]) else weight.clone()
        for name, weight in current.items()
    }
    grid = rank_grid(deltas, ks)
    points = []
    try:
        for k in grid:
            for d in deltas:
                weight = params[d.parameter]
                weight.copy_((base_weights[d.parameter].float() + d.top(k)).to(weight.dtype))
            points.append(measure(host))
    finally:
        for name, weight in originals.items():
            params[name].copy_(weight)
    section = functional_rank_section(grid, points, points[0] if base is None else base, tuned, target)
    return {"matrices": len(deltas), **section}


def functional_rank_section(
    grid: Sequence[int],
    points: Sequence[Measured],
    base: Measured,
    tuned: Measured,
    target: float = TARGET,
) -> dict[str, Any]:
    """Each measure's values and shares along the grid, and k₉₀ of the learning.

    Returns:
        `{"ks", "target", "k90", "k90_upper", <measure>: {"base", "tuned", "values", "share", "share_ci95"}}`:
        share None where the run did not change the measure (or a value is missing), share_ci95 None where the
        sequences do not pair up; k90 the smallest k whose learning share reaches `target`, k90_upper the
        smallest k whose whole interval does (k₉₀ is at most that under evaluation noise); both None when no k
        does.
    """
    from deltarank.evaluation.paired import paired_share

    section: dict[str, Any] = {"ks": list(grid), "target": target}
    for name in [n for n in base if n in tuned]:
        at_base, at_tuned = base[name].get("value"), tuned[name].get("value")
        values = [point.get(name, {}).get("value") for point in points]
        shares = [_share(value, at_base, at_tuned) for value in values]
        intervals: list[list[float] | None] = []
        for point, share in zip(points, shares, strict=True):
            found = None if share is None else paired_share(point.get(name, {}), tuned[name], base[name])
            intervals.append(None if found is None else [found["ci95_low"], found["ci95_high"]])
        section[name] = {
            "base": at_base,
            "tuned": at_tuned,
            "values": values,
            "share": shares,
            "share_ci95": intervals,
        }
    learning = section.get(LEARNING) or {"share": [None] * len(grid), "share_ci95": [None] * len(grid)}
    lows = [None if ci is None else ci[0] for ci in learning["share_ci95"]]
    section["k90"], section["k90_upper"] = (
        _first_reaching(grid, v, target) for v in (learning["share"], lows)
    )
    return section


def _share(value: float | None, at_base: float | None, at_tuned: float | None) -> float | None:
    """(value − at_base) / (at_tuned − at_base); None where a value is missing or the run changed nothing."""
    if value is None or at_base is None or at_tuned is None or at_tuned == at_base:
        return None
    return (value - at_base) / (at_tuned - at_base)


def _first_reaching(grid: Sequence[int], shares: Sequence[float | None], target: float) -> int | None:
    """The smallest k of the grid whose share reaches `target` (None when none does)."""
    return next((k for k, s in zip(grid, shares, strict=True) if s is not None and s >= target), None)


def run_functional_rank(
    loader: Any,
    run: Path,
    measure: Measure,
    base: Measured | None = None,
    tuned: Measured | None = None,
    ks: Sequence[int] = KS,
    target: float = TARGET,
) -> dict[str, Any]:
    """The functional rank of a `deltarank train` output (or checkpoint) `run` against `loader`'s base.

    Args:
        loader: The `deltarank.evaluation.models.EvalModels` of the base the run trained from.
        run: The run's directory: a full fine-tune's weights or a peft adapter.
        measure: model -> its measures (`Measured`; `LEARNING` gives k₉₀).
        base: The base model's measures when they are known (made by `measure` or on the same sequences by
            the same code); None: measured here.
        tuned: The run's measures when they are known (likewise); None: measured here.
        ks: The numbers of directions to keep.
        target: The learning share k₉₀ must reach.

    Returns:
        `functional_rank`'s section.

    Raises:
        DeltarankError: the run has no ΔW or trained on a quantized base (`weight_deltas`).
    """
    from deltarank.io.adapter import is_adapter_dir

    deltas = weight_deltas(loader.source.weights, run, loader.device)
    if is_adapter_dir(run):  # the cuts go into the base model itself (its weights restored after)
        tuned = loader.evaluate(run, measure) if tuned is None else tuned
        base_model = loader.base()
        weights = _weights_of(base_model, deltas, copy=True)
        return functional_rank(base_model, weights, deltas, measure, base, tuned, ks, target)
    base_model = loader.base()
    known = measure(base_model) if base is None else base
    weights = _weights_of(base_model, deltas, copy=False)

    def cut(model: Any) -> dict[str, Any]:
        at_tuned = measure(model) if tuned is None else tuned
        return functional_rank(model, weights, deltas, measure, known, at_tuned, ks, target)

    return loader.evaluate(run, cut)


def _weights_of(model: Any, deltas: Sequence[WeightDelta], copy: bool) -> dict[str, torch.Tensor]:
    """The weights of `model` that `deltas` change (copies when `copy`), by parameter name.

    Raises:
        DeltarankError: the model has no parameter of that name.
    """
    params = dict(model.named_parameters())
    missing = [d.parameter for d in deltas if d.parameter not in params]
    if missing:
        raise DeltarankError(f"the model has no parameter {missing[0]} (of {len(missing)} ΔW not placed)")
    return {
        d.parameter: params[d.parameter].detach().clone() if copy else params[d.parameter].detach()
        for d in deltas
    }
