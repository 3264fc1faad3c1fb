"""Intruder mitigation: scale each intruder direction's singular value of the tuned weights by λ.

The convention is peft's `reduce_intruder_dimension` (peft 0.21, after Shuttleworth et al. 2024): with the thin
SVD W_merged = W₀ + ΔW = Σ_i σ_i u_i v_iᵀ, direction i among the top k is an intruder when
max_j |cos(u_i, u⁰_j)| < ε over W₀'s left singular vectors u⁰_j (the same test as `deltarank intruders`), and

    W' = W_merged + (λ − 1) · Σ_{i intruder} σ_i u_i v_iᵀ,

so an intruder's σ_i becomes λ·σ_i and every other singular value and vector is kept (λ = 0 removes it).

- A dense TUNED (a full fine-tune, or any method merged) is rewritten as a safetensors checkpoint: each
  selected weight with an intruder replaced by W' (computed in the compute dtype, stored back in the tuned
  tensor's dtype), every other tensor copied unchanged, config and tokenizer files copied.
- A PEFT LoRA adapter TUNED is rewritten as a LoRA adapter, as peft does: ΔW' = (W' − W₀)/s (s the module's
  scale α/r or α/√r), re-factorised by its SVD truncated to the module's rank r, B' = U_r Σ_r^½ and
  A' = Σ_r^½ V_rᵀ, stored in the factors' dtype; modules without an intruder keep their factors, and the
  config and every other tensor are copied. (ΔW' has rank up to r + #intruders: the truncation keeps the
  best rank-r part.)
- Any other adapter with a ΔW (DoRA, IA3, LoHa, LoKr, AdaLoRA, OFT, BOFT, VeRA, a fan_in_fan_out LoRA), whose
  own parametrisation cannot hold an arbitrary rescaled direction, is written as the merged, mitigated model
  (`merge_adapters`, the default): a copy of the BASE safetensors checkpoint with each adapted weight replaced
  by W' (or by W_merged = W₀ + ΔW, its method's exact ΔW form, where no direction is an intruder), in the
  base tensor's dtype, and the base's config and tokenizer files. Refused: QLoRA (its ΔW is against a 4-bit
  base), adapters with `modules_to_save` (trained copies the merge would drop), a base that is not safetensors.

Only the selected matrices (the default selection, or --include/--exclude) are mitigated; every other tensor is
copied as it is (an adapter's embedding LoRA and modules_to_save included).

Memory: one matrix pair, its mitigated weight and their SVDs; the output streams to disk tensor by tensor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from deltarank.analysis.engine.compute import ProgressHook, resolve_device, resolve_precision
from deltarank.analysis.engine.loading import LoadedPair, load_pair
from deltarank.analysis.engine.plan import Plan, plan_one
from deltarank.analysis.maths.svd import weight_svd
from deltarank.analysis.results.intruders import IntruderResult
from deltarank.analysis.tools.intruders import (
    DEFAULT_EPSILON,
    DEFAULT_TOP_K,
    EPSILON_SWEEP,
    check_epsilons,
    intruder_directions,
    intruder_record,
    intruder_result,
    tuned_weight,
)
from deltarank.errors import DeltarankError, OptionError
from deltarank.io.adapter import AdapterSource
from deltarank.io.atomic import atomic_directory
from deltarank.io.base import TensorSource
from deltarank.io.checkpoint_copy import copy_companions, rewrite_checkpoint, weight_files
from deltarank.io.model_ref import local_path
from deltarank.io.naming import Selection
from deltarank.io.pairing import AdapterPair, DensePair
from deltarank.io.safetensors_file import SafetensorsSource
from deltarank.io.standalone import StandaloneAdapter

DEFAULT_LAMBDA = 0.75
SUPPORTED = "only dense checkpoints and PEFT LoRA adapters are supported for --mitigate"
MERGED = "other adapters are written merged into a copy of a safetensors BASE"


@dataclass(frozen=True)
class Mitigated:
    """One weight after mitigation.

    Attributes:
        weight: W' in the compute dtype, shape (m, n) (W_merged itself when there is no intruder).
        intruders: Indices (into the top k) of the intruder directions.
        max_cos: max_j |cos(u_i, u⁰_j)| of each of the top-k directions.
        sigma: W_merged's top-k singular values.
    """

    weight: torch.Tensor
    intruders: tuple[int, ...]
    max_cos: tuple[float, ...]
    sigma: tuple[float, ...]


def check_lambda(lam: float) -> float:
    """λ: any finite number ≥ 0 (1 changes nothing, 0 removes the intruder directions)."""
    if not math.isfinite(lam) or lam < 0:
        raise OptionError(f"--mitigate λ must be a finite number ≥ 0, got {lam}")
    return float(lam)


def mitigated_weight(
    base: torch.Tensor, merged: torch.Tensor, top_k: int, epsilon: float, lam: float
) -> Mitigated:
    """W' = W_merged + (λ − 1) Σ_{intruders} σ_i u_i v_iᵀ, intruders among W_merged's top k by |cos| < ε.

    Shapes: base (m, n), merged (m, n), both in the compute dtype -> W' (m, n).
    """
    u, s, v, cos = intruder_directions(base, merged, top_k)  # (m, p), (p,), (n, p), (k,)
    k = cos.numel()
    found = torch.nonzero(cos < epsilon).flatten()
    weight = merged
    if found.numel():
        weight = merged + (lam - 1.0) * (u[:, found] * s[found]) @ v[:, found].mT
    return Mitigated(
        weight,
        tuple(int(i) for i in found.cpu()),
        tuple(float(c) for c in cos.cpu()),
        tuple(float(x) for x in s[:k].cpu()),
    )


def lora_factors(delta: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """B = U_r Σ_r^½ (m, r) and A = Σ_r^½ V_rᵀ (r, n) of the rank-r truncated SVD of `delta` (m, n), as peft
    re-factorises a mitigated ΔW (σ shared equally between the factors)."""
    u, s, v = weight_svd(delta)
    root = s[:rank].sqrt()
    return u[:, :rank] * root, root[:, None] * v[:, :rank].mT


def mitigate(
    base: str | Path,
    tuned: str | Path,
    out_dir: str | Path,
    *,
    lam: float = DEFAULT_LAMBDA,
    top_k: int = DEFAULT_TOP_K,
    epsilon: float = DEFAULT_EPSILON,
    overwrite: bool = False,
    include: str | None = None,
    exclude: str | None = None,
    device: str = "auto",
    precision: str = "float32",
    progress: ProgressHook | None = None,
    allow_different_base: bool = False,
    merge_adapters: bool = True,
) -> IntruderResult:
    """Write TUNED with each intruder direction's singular value scaled by λ into `out_dir` (see module doc).

    Args:
        base: Base checkpoint (.safetensors file, Hugging Face directory or GGUF).
        tuned: Tuned safetensors checkpoint (file or directory), or a PEFT LoRA adapter directory.
        out_dir: Directory to write: a checkpoint for a dense TUNED, a LoRA adapter for an adapter.
        lam: λ, the factor on each intruder's singular value (≥ 0).
        top_k: How many top singular vectors of W_merged to test.
        epsilon: Cosine threshold ε.
        overwrite: Replace `out_dir` when it exists.
        include: Regex of tensor names instead of the default (transformer-block 2-D weights).
        exclude: Regex of tensor names to leave out (copied unchanged).
        device: auto, cpu or cuda.
        precision: float32 or float64 (the compute dtype).
        progress: Called as progress(done, total, name) after each matrix.
        allow_different_base: Accept a TUNED whose config describes another architecture.
        merge_adapters: Write an adapter other than plain LoRA as the merged, mitigated model (a copy of
            BASE); False refuses it.

    Returns:
        The intruders found (at ε, on the unmitigated weights), one MatrixIntruders per selected matrix.

    Raises:
        OptionError: a bad λ, ε or k.
        DeltarankError: a TUNED that is not safetensors, an adapter that cannot be mitigated (see the module
            doc; any adapter but plain LoRA with `merge_adapters` False); nothing is written.
    """
    lam = check_lambda(lam)
    sweep = check_epsilons(epsilon, EPSILON_SWEEP, top_k)
    dev, dtype = resolve_device(device), resolve_precision(precision)
    base_source, plan = plan_one(
        base, tuned, Selection(include=include, exclude=exclude), allow_different_base
    )
    rewrite = _Rewrite(base_source, plan, dev, dtype, top_k, epsilon, lam, progress)
    weights = rewrite.check(tuned, merge_adapters)
    companions_of = local_path(base if rewrite.merged else tuned)
    if rewrite.merged and companions_of.is_file():
        companions_of = companions_of.parent
    with atomic_directory(out_dir, overwrite) as tmp:
        rewrite_checkpoint(weights, tmp, rewrite.replace)
        if companions_of.is_dir():
            copy_companions(companions_of, tmp)
    records = tuple(
        intruder_record(
            pair, pair.kind, rewrite.done[pair.name].max_cos, rewrite.done[pair.name].sigma, epsilon, sweep
        )
        for pair in plan.pairs
    )
    return intruder_result(base, tuned, top_k, epsilon, sweep, str(dev), precision, records, plan)


class _Rewrite:
    """The tensor replacement of one run: mitigated weights (dense) or re-factorised LoRA factors (adapter)."""

    def __init__(
        self,
        base_source: TensorSource,
        plan: Plan,
        dev: torch.device,
        dtype: torch.dtype,
        top_k: int,
        epsilon: float,
        lam: float,
        progress: ProgressHook | None,
    ) -> None:
        self.base_source, self.plan, self.dev, self.dtype = base_source, plan, dev, dtype
        self.top_k, self.epsilon, self.lam, self.progress = top_k, epsilon, lam, progress
        self.done: dict[str, Mitigated] = {}  # by pair name
        self._dense = {p.tuned_key: p for p in plan.pairs if isinstance(p, DensePair)}
        self._lora: dict[str, AdapterPair] = {}  # a LoRA factor's key -> its module's pair (a LoRA adapter)
        self._merged: dict[str, AdapterPair] = {}  # base key -> adapter pair, when written merged
        self.merged = False  # True: the output is BASE with each adapted weight merged (and mitigated)
        # The other factor of an adapter module already mitigated, until it is written (None: keep it).
        self._factors: dict[str, torch.Tensor | None] = {}

    def check(self, tuned: str | Path, merge_adapters: bool = True) -> TensorSource:
        """The weights to rewrite, after refusing what cannot be mitigated (before anything is written)."""
        source = self.plan.source
        if isinstance(source, AdapterSource):
            config = source.config
            kinds = sorted({p.kind for p in self.plan.pairs})
            if config.peft_type != "LORA" or kinds != ["lora"] or config.fan_in_fan_out:
                if not merge_adapters:
                    raise DeltarankError(
                        f"{tuned}: a {'/'.join(kinds) or config.peft_type} adapter: {SUPPORTED}"
                    )
                return self._check_merged(tuned, kinds, source)
            if any(isinstance(p, AdapterPair) and p.module.scale == 0 for p in self.plan.pairs):
                raise DeltarankError(f"{tuned}: a module has scale α/r = 0, so ΔW/s is undefined")
            weights: TensorSource = SafetensorsSource(source.weights_path)
            self._lora = {
                k: p for p in self.plan.pairs if isinstance(p, AdapterPair) for k in _factor_keys(p)
            }
        elif isinstance(source, StandaloneAdapter) or not all(
            isinstance(p, DensePair) for p in self.plan.pairs
        ):
            raise DeltarankError(f"{tuned}: {SUPPORTED}")
        else:
            weights = source
        weight_files(weights)  # refuses a GGUF or an unreadable dtype before anything is written
        return weights

    def _check_merged(self, tuned: str | Path, kinds: list[str], source: AdapterSource) -> TensorSource:
        """BASE's weights, to be written with each adapted weight merged: refused for QLoRA, modules_to_save
        and a base that is not safetensors."""
        name = "/".join(kinds) or source.config.peft_type
        if "qlora" in kinds or not kinds:
            raise DeltarankError(f"{tuned}: a {name} adapter: {SUPPORTED}; {MERGED}")
        if source.unsupported:
            raise DeltarankError(
                f"{tuned}: a {name} adapter with tensors outside its ΔW (modules_to_save, embedding factors: "
                f"{source.unsupported[0]}, ...), which a merge would drop: {SUPPORTED}"
            )
        if not isinstance(self.base_source, SafetensorsSource):
            raise DeltarankError(f"{tuned}: a {name} adapter: {MERGED}, and this BASE is not safetensors")
        self._merged = {p.base_key: p for p in self.plan.pairs if isinstance(p, AdapterPair)}
        self.merged = True
        weight_files(self.base_source)
        return self.base_source

    def replace(self, key: str, stored: torch.Tensor) -> torch.Tensor:
        """The tensor to write for the stored `key` (`stored` itself when it is not mitigated)."""
        if (merged := self._merged.get(key)) is not None:  # an adapted weight of BASE: W' or W₀ + ΔW
            loaded = load_pair(merged, self.base_source, self.plan.source, self.dev, with_base=True)
            return self._mitigate(loaded).weight.to(stored.dtype).cpu()
        if key in self._factors:
            factor = self._factors.pop(key)
            return stored if factor is None else factor
        if (dense := self._dense.get(key)) is not None:
            loaded = load_pair(dense, self.base_source, self.plan.source, self.dev)
            result = self._mitigate(loaded)
            return result.weight.to(stored.dtype).cpu() if result.intruders else stored
        if (adapter := self._lora.get(key)) is not None:
            loaded = load_pair(adapter, self.base_source, self.plan.source, self.dev, with_base=True)
            result = self._mitigate(loaded)
            module = adapter.module
            other = module.a_key if key == module.b_key else module.b_key
            if not result.intruders:
                self._factors[other] = None
                return stored
            base_w = loaded.tensors["base"].to(self.dtype)
            b, a = lora_factors((result.weight - base_w) / module.scale, int(module.rank or 0))
            factors = {module.b_key: b, module.a_key: a}
            self._factors[other] = factors[other].to(stored.dtype).cpu()
            return factors[key].to(stored.dtype).cpu()
        return stored

    def _mitigate(self, loaded: LoadedPair) -> Mitigated:
        base_w = loaded.tensors["base"].to(self.dtype)  # (m, n)
        result = mitigated_weight(
            base_w, tuned_weight(loaded, self.dtype), self.top_k, self.epsilon, self.lam
        )
        self.done[loaded.pair.name] = result
        if self.progress is not None:
            self.progress(len(self.done), len(self.plan.pairs), loaded.pair.name)
        return result


def _factor_keys(pair: AdapterPair) -> tuple[str, str]:
    """The stored keys of a LoRA module's B and A (the first one met in the file triggers its mitigation)."""
    return pair.module.b_key, pair.module.a_key
