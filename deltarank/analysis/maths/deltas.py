"""ΔW of one weight, formed once, in one place: one function per kind of delta, chosen by the pair's kind.

Every form takes the tensors a reader gave for one weight (stored dtypes, named as in `DeltaInputs`), upcasts
them to the compute dtype *before* any arithmetic, and returns a `Delta`: ΔW in the weight's stored
orientation, either as a dense matrix or as exact low-rank factors, with the figures its record needs (the
exact ‖ΔW‖_F, ‖W_base‖_F, the erased fraction and the storage-noise model).

- dense: ΔW = W' − W (two checkpoints). On the CPU in NumPy (exact bf16 widening, no torch op beside the
  decompositions, see `arrays`); on CUDA in torch.
- lora: ΔW = s·B·A, kept as factors (never formed); s = α/r, or α/√r with rsLoRA.
- dora: ΔW = m ⊙ (W + s·B·A) / ‖W + s·B·A‖_row − W, dense (needs W).

Adding a method means adding one form to `FORMS` and its test against peft's fp32 merge; nothing else.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch

from deltarank.analysis.maths.arrays import frobenius_norm, host_array
from deltarank.analysis.maths.noise import StorageNoise, storage_noise


@dataclass(frozen=True)
class DeltaInputs:
    """What a form needs besides the tensors: how the adapter scales and stores the weight.

    Attributes:
        kind: dense, lora or dora (a key of `FORMS`).
        tuned_dtype: Stored dtype label of the tuned tensor or factors (for the noise model).
        scale: The adapter's scaling s (1.0 for dense).
        fan_in_fan_out: The base weight is stored (in, out) (GPT-2 Conv1D): the factors' s·B·A is transposed.
    """

    kind: str
    tuned_dtype: str
    scale: float = 1.0
    fan_in_fan_out: bool = False


@dataclass(frozen=True)
class Delta:
    """ΔW of one weight in its stored orientation, with the whole-tensor figures of its record.

    Exactly one of `matrix` and (`left`, `right`) is set: dense ΔW, or ΔW = scale · left @ right.

    Attributes:
        kind: The form that made it (dense, lora, dora).
        norm: ‖ΔW‖_F computed from the whole dense delta (exact whatever solver runs later); None for
            factors, whose r singular values are all computed exactly and give it.
        matrix: Dense ΔW, shape (m, n), compute dtype, on the compute device.
        left: Low-rank left factor, shape (m, r).
        right: Low-rank right factor, shape (r, n).
        scale: Scalar of the low-rank product.
        base_norm: ‖W_base‖_F when the form read W, else None.
        erased: Share of exactly-zero entries of a dense ΔW (None for factors).
        noise: Storage-noise model of the tuned tensor (None when no stored tensor rounds ΔW).
    """

    kind: str
    norm: float | None
    matrix: torch.Tensor | None = None
    left: torch.Tensor | None = None
    right: torch.Tensor | None = None
    scale: float = 1.0
    base_norm: float | None = None
    erased: float | None = None
    noise: StorageNoise | None = None

    @property
    def low_rank(self) -> bool:
        """True when ΔW is held as factors."""
        return self.matrix is None

    def dense(self) -> torch.Tensor:
        """ΔW as a dense (m, n) matrix (formed from the factors when low-rank: for tools, never for σ)."""
        if self.matrix is not None:
            return self.matrix
        assert self.left is not None and self.right is not None
        return self.scale * (self.left @ self.right)


Tensors = Mapping[str, torch.Tensor]
Form = Callable[[Tensors, DeltaInputs, torch.dtype], Delta]


def dense_form(tensors: Tensors, inputs: DeltaInputs, dtype: torch.dtype) -> Delta:
    """ΔW = tuned − base from tensors `base` and `tuned`, each upcast to `dtype` before subtracting.

    CPU tensors are handled in NumPy (ΔW shares its memory with the returned tensor); CUDA tensors in torch.
    The raw tensors are not kept. Shapes: base (m, n), tuned (m, n) -> matrix (m, n).
    """
    base, tuned = tensors["base"], tensors["tuned"]
    if base.device.type != "cpu":
        return _device_dense(base, tuned, inputs.tuned_dtype, dtype)
    base_values = host_array(base, dtype)
    delta = host_array(tuned, dtype) - base_values  # upcast first, then subtract
    norm = frobenius_norm(delta)
    # The numerical floor is σ₁·min(m, n)·eps and σ₁ ≥ ‖ΔW‖_F / √min(m, n): a lower bound of it before the σ
    # are known (0.99 absorbs rounding in the norm), which lets the noise pass skip its per-entry work.
    floor_hint = 0.99 * norm * math.sqrt(min(delta.shape)) * float(torch.finfo(dtype).eps)
    return Delta(
        kind="dense",
        norm=norm,
        matrix=torch.from_numpy(delta),
        base_norm=frobenius_norm(base_values),
        erased=float(np.count_nonzero(delta == 0)) / max(delta.size, 1),
        noise=storage_noise(tuned, inputs.tuned_dtype, floor_hint),
    )


def _device_dense(base: torch.Tensor, tuned: torch.Tensor, tuned_dtype: str, dtype: torch.dtype) -> Delta:
    """`dense_form` on an accelerator, in torch; the noise model reads the tuned tensor on the host."""
    noise = storage_noise(tuned.cpu(), tuned_dtype)
    wide_base = base.to(dtype)
    delta = tuned.to(dtype) - wide_base  # (m, n)
    return Delta(
        kind="dense",
        norm=float(torch.linalg.vector_norm(delta)),
        matrix=delta,
        base_norm=float(torch.linalg.vector_norm(wide_base)),
        erased=float((delta == 0).sum()) / max(delta.numel(), 1),
        noise=noise,
    )


def lora_form(tensors: Tensors, inputs: DeltaInputs, dtype: torch.dtype) -> Delta:
    """ΔW = s·B·A from `lora_B` (out, r) and `lora_A` (r, in), kept as factors in the stored orientation.

    With fan_in_fan_out the stored weight is (in, out) and ΔW_stored = (s·B·A)ᵀ = s·Aᵀ·Bᵀ.
    """
    b, a = tensors["lora_B"].to(dtype), tensors["lora_A"].to(dtype)
    left, right = (a.mT, b.mT) if inputs.fan_in_fan_out else (b, a)
    return Delta(kind="lora", norm=None, left=left, right=right, scale=inputs.scale)


def dora_form(tensors: Tensors, inputs: DeltaInputs, dtype: torch.dtype) -> Delta:
    """ΔW of a DoRA module from `base`, `lora_B`, `lora_A` and `magnitude`: m ⊙ (W + s·B·A) / ‖W + s·B·A‖_row − W.

    Shapes: base (out, in) or (in, out) with fan_in_fan_out, b (out, r), a (r, in), magnitude (out,). The norm
    runs over the input dimension of each output row, as peft's `DoraLinearLayer.get_weight_norm`.
    """
    base = tensors["base"].to(dtype)
    w = base.mT if inputs.fan_in_fan_out else base  # DoRA maths on (out, in)
    adapted = w + inputs.scale * (tensors["lora_B"].to(dtype) @ tensors["lora_A"].to(dtype))  # (out, in)
    row_norm = torch.linalg.vector_norm(adapted, dim=1, keepdim=True)  # (out, 1)
    delta = tensors["magnitude"].to(dtype).reshape(-1, 1) * adapted / row_norm - w
    matrix = delta.mT if inputs.fan_in_fan_out else delta
    return Delta(
        kind="dora",
        norm=float(torch.linalg.vector_norm(matrix)),
        matrix=matrix,
        base_norm=float(torch.linalg.vector_norm(base)),
    )


FORMS: dict[str, Form] = {"dense": dense_form, "lora": lora_form, "dora": dora_form}


def form_delta(tensors: Tensors, inputs: DeltaInputs, dtype: torch.dtype) -> Delta:
    """ΔW of one weight by the form of its kind (see `FORMS`)."""
    return FORMS[inputs.kind](tensors, inputs, dtype)
