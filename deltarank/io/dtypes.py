"""Facts about stored dtype labels (safetensors codes and GGUF type names), in one table per fact.

Readers use `SAFETENSORS_DTYPES` to decode tensors; the noise model uses the mantissa widths; the result
warnings use the low-precision and integer sets. Codes a reader cannot decode (`UNREADABLE_ITEMSIZE`) are
listed and skipped, never a reason to refuse the whole checkpoint.
"""

from __future__ import annotations

import torch

# safetensors dtype code -> torch dtype, for the codes deltarank reads.
SAFETENSORS_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
}
# Codes the safetensors format defines that deltarank does not decode: bytes per element, so that their
# header entries are still checked. Codes not listed anywhere are accepted as opaque byte ranges.
UNREADABLE_ITEMSIZE: dict[str, int] = {
    "U16": 2,
    "U32": 4,
    "U64": 8,
    "F8_E8M0": 1,
    "C64": 8,
    "F4": 1,
    "F6_E2M3": 1,
}

# Explicit mantissa bits of each floating storage dtype (safetensors and GGUF labels).
MANTISSA_BITS: dict[str, int] = {"F64": 52, "F32": 23, "F16": 10, "BF16": 7, "F8_E4M3": 3, "F8_E5M2": 2}
# Smallest normal exponent e_min (2^e_min is the smallest normal number): below it the grid spacing stays at
# 2^(e_min − bits) (subnormals).
MIN_NORMAL_EXPONENT: dict[str, int] = {
    "F64": -1022,
    "F32": -126,
    "F16": -14,
    "BF16": -126,
    "F8_E4M3": -6,
    "F8_E5M2": -14,
}
# Storage whose rounding noise is large enough to inflate rank measures.
LOW_PRECISION = frozenset({"BF16", "F16", "F8_E4M3", "F8_E5M2"})
INTEGER_DTYPES = frozenset({"I64", "I32", "I16", "I8", "U8", "BOOL"})


def mantissa_bits(dtype: str) -> int | None:
    """Explicit mantissa bits of a stored dtype label; None for quantized/integer types (not modelled)."""
    return MANTISSA_BITS.get(dtype.upper())


def is_quantized(dtype: str) -> bool:
    """A stored type whose error deltarank does not model: neither a float nor an integer type (Q4_K, ...)."""
    return mantissa_bits(dtype) is None and dtype.upper() not in INTEGER_DTYPES
