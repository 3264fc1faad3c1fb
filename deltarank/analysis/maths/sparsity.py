"""How many entries of ΔW did not move: exactly, within an absolute tolerance, within the base's storage rounding.

Mukherjee et al. 2025 (arXiv 2505.11711) call an update sparse by the share of entries it leaves unchanged:
exact zeros of ΔW, and entries with |Δw| ≤ atol (`torch.isclose(atol=1e-5)`). In a low-precision checkpoint an
update below half the grid spacing of the stored weight rounds away entirely (bf16: |Δw| ≤ ulp(w)/2 ≈ |w|/256,
arXiv 2602.03839); the third count measures that, with ulp(w) of each base entry in the base's stored dtype:
ulp(w) = 2^(e − 1 − p) for |w| = m·2^e, m ∈ [½, 1), p explicit mantissa bits (`noise.ulp_exponents`).

Counts are taken in row blocks of the formed ΔW (`Delta.dense_rows`) on the host, in NumPy, so no full-size
temporary is made beside ΔW: a block of |Δw|, of the widened base and of its ulp exponents at a time. The
comparison with ulp(w)/2 is inclusive, as the definition: a change of exactly half an ulp counts as rounded
away (under round-half-to-even it is for half the grid points; a bf16 pair moving down from a power of two by
one step of the finer grid below it is such a change).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

from deltarank.analysis.maths.arrays import host_array
from deltarank.analysis.maths.noise import ulp_exponents
from deltarank.io.dtypes import MIN_NORMAL_EXPONENT, mantissa_bits

# Mukherjee et al. 2025's tolerance for "unchanged" (`isclose(atol=1e-5)`). Only the absolute part is used here:
# |Δw| ≤ atol, with no term relative to |w| (the storage-rounding count is the relative view).
DEFAULT_SPARSITY_ATOL = 1e-5


@dataclass(frozen=True)
class EntryCounts:
    """How many entries of one ΔW stayed put (counts, not shares: the record divides by `entries`).

    Attributes:
        entries: m·n.
        unchanged: Entries with Δw == 0 exactly (both weights upcast to the compute dtype before subtracting).
        within_atol: Entries with |Δw| ≤ atol.
        within_rounding: Entries with |Δw| ≤ ulp(w)/2 of the base entry w in the base's stored dtype; None when
            the base weight was not read (LoRA-style factors) or its dtype is not a modelled float.
    """

    entries: int
    unchanged: int
    within_atol: int
    within_rounding: int | None


def count_unchanged(
    rows: Iterable[tuple[slice, torch.Tensor]],
    base: torch.Tensor | None,
    base_dtype: str,
    atol: float,
) -> EntryCounts:
    """The `EntryCounts` of a ΔW given as row blocks, against the stored base weight when there is one.

    Args:
        rows: (row range, ΔW[rows]) blocks covering ΔW in order, in the compute dtype, on any device.
        base: The base weight as stored (its dtype and orientation), or None when it was not read.
        base_dtype: Stored dtype label of the base weight (F32, BF16, F16, Q4_K, ...).
        atol: Absolute tolerance of `within_atol`, ≥ 0.

    Shapes: each block (rows, n); base (m, n).
    """
    bits = mantissa_bits(base_dtype)
    rounding = base is not None and bits is not None
    min_exponent = MIN_NORMAL_EXPONENT.get(base_dtype.upper())
    entries = unchanged = within_atol = within_rounding = 0
    for block, part in rows:
        values = host_array(part.detach().cpu(), part.dtype if part.dtype == torch.float64 else torch.float32)
        magnitude = np.abs(values)  # (rows, n)
        entries += magnitude.size
        unchanged += magnitude.size - int(np.count_nonzero(magnitude))
        within_atol += int(np.count_nonzero(magnitude <= atol))
        if rounding:
            assert base is not None and bits is not None
            stored = base[block].detach().cpu()
            wide = host_array(stored, torch.float64 if stored.dtype == torch.float64 else torch.float32)
            exponent = ulp_exponents(wide, bits, min_exponent)
            exponent -= 1  # in place: ulp/2 = 2^(log₂ ulp − 1)
            half_ulp = np.ldexp(magnitude.dtype.type(1.0), exponent)
            within_rounding += int(np.count_nonzero(magnitude <= half_ulp))
    return EntryCounts(entries, unchanged, within_atol, within_rounding if rounding else None)
