"""NumPy views and passes on CPU tensors: exact widening, the finite check, the Frobenius norm.

The loader thread prepares the next pair while the current one is decomposed. A torch op there would start a
second OpenMP thread team beside the one (or the OpenBLAS threads) of the decomposition and, on few cores, slow
both down (measured during development, 2 cores, SmolLM2 pair: 14.4 s with torch's finite check on the loader
thread, 6.5 s with NumPy's).
NumPy runs these element-wise passes on the calling thread and releases the GIL, and none of them calls BLAS.
"""

from __future__ import annotations

import math

import numpy as np
import torch

FLOAT_DTYPES = {torch.float32: np.float32, torch.float64: np.float64}
# Matrices above this many entries (64 MiB of float32) are swept in blocks of rows where a whole-matrix
# temporary would dominate memory (7B-sized MLP weights); smaller ones keep the one-pass code.
LARGE_ENTRIES = 1 << 24


def row_blocks(rows: int, cols: int, entries: int = LARGE_ENTRIES // 8) -> list[slice]:
    """Consecutive row ranges of about `entries` entries each (at least one row), covering `rows`."""
    step = max(1, entries // max(cols, 1))
    return [slice(start, min(start + step, rows)) for start in range(0, rows, step)]


def host_array(tensor: torch.Tensor, dtype: torch.dtype) -> np.ndarray:
    """A CPU tensor as a NumPy array of `dtype` (float32 or float64), without a copy when it already is one.

    bfloat16 is widened exactly through its bits (its 16 bits are the high half of a float32).
    """
    target = FLOAT_DTYPES[dtype]
    if tensor.dtype == torch.bfloat16:
        bits = tensor.view(torch.int16).numpy().view(np.uint16).astype(np.uint32) << 16
        return bits.view(np.float32).astype(target, copy=False)
    if tensor.dtype in (torch.float16, torch.float32, torch.float64):
        return tensor.numpy().astype(target, copy=False)
    return tensor.to(dtype).numpy()  # float8 and other rare dtypes


def all_finite(tensor: torch.Tensor) -> bool:
    """Whether every entry is finite.

    float32/float64 use NumPy's vectorised `isfinite`; for float16 (where it is slow) a float64 sum is finite
    exactly when every entry is (it cannot overflow); bfloat16 is checked on its exponent bits.
    """
    if tensor.device.type != "cpu":
        return bool(torch.isfinite(tensor).all())
    if tensor.dtype in (torch.float32, torch.float64):
        return bool(np.isfinite(tensor.numpy()).all())
    if tensor.dtype == torch.float16:
        return math.isfinite(float(tensor.numpy().sum(dtype=np.float64)))
    if tensor.dtype == torch.bfloat16:
        exponent = tensor.view(torch.int16).numpy() & np.int16(0x7F80)
        return not bool((exponent == np.int16(0x7F80)).any())
    return bool(torch.isfinite(tensor).all())


def frobenius_norm(values: np.ndarray) -> float:
    """‖values‖_F: squares in the array's dtype, summed in float64 (relative error ~1e-7 for float32).

    No BLAS call (a dot product would be one): this runs beside the decomposition's BLAS threads.
    """
    return math.sqrt(float(np.square(values).sum(dtype=np.float64)))
