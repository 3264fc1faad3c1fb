"""A base weight as a 4-bit training saw it: bitsandbytes' quantize_4bit then dequantize_4bit, on the CPU.

With the settings the run recorded (`deltarank.io.quantization.QuantizationSpec`) and the weight first cast to
the dtype it was quantized in, the result is bit-identical to the dequantized weight of peft's / bitsandbytes'
`Linear4bit` during training (tested against a real one).
"""

from __future__ import annotations

import torch

from deltarank.errors import DeltarankError
from deltarank.io.quantization import QuantizationSpec


def dequantized(weight: torch.Tensor, spec: QuantizationSpec) -> torch.Tensor:
    """dequant(quant(W)) of one stored weight (m, n), in `spec.dtype`, on `weight`'s device.

    Raises:
        DeltarankError: bitsandbytes is not installed.
    """
    from deltarank.io.bitsandbytes_gate import allow

    allow()
    try:
        import bitsandbytes.functional as bnb
    except ImportError:
        raise DeltarankError(
            "the quantisation error of a QLoRA adapter needs bitsandbytes (pip install bitsandbytes), or "
            "run with --no-quantization-error"
        ) from None
    w = weight.detach().to("cpu", getattr(torch, spec.dtype)).contiguous()
    packed, state = bnb.quantize_4bit(
        w,
        blocksize=spec.blocksize,
        compress_statistics=spec.double_quant,
        quant_type=spec.quant_type,
        quant_storage=getattr(torch, spec.quant_storage),
    )
    return bnb.dequantize_4bit(packed, state).to(weight.device)
