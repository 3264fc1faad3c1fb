"""How a QLoRA run quantized its base: the NF4 settings, written into the adapter directory by `deltarank train`.

A QLoRA adapter's own files (peft's `adapter_config.json`) do not say that its base was quantized. `deltarank
train --method qlora` therefore writes `quantization.json` next to every adapter it saves (final and
`checkpoint-<step>`); a run directory written before that file existed is recognised by its `run.json`
(`"method": "qlora"`), whose settings were always `QLORA_NF4`. The settings are those of bitsandbytes'
`quantize_4bit` applied to the weight in `dtype` (transformers quantizes the weight in the dtype the model is
loaded in); the analysis redoes exactly that to recover the base the adapter was trained on.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from deltarank.errors import InputError
from deltarank.io.run_directory import RUN_RECORD
from deltarank.io.training_methods import REGISTRY

QUANTIZATION_FILE = "quantization.json"
SCHEMA = "deltarank.quantization/1"
RUN_FILE = RUN_RECORD  # deltarank train's run record (its `method`)
QUANT_TYPES = ("nf4", "fp4")
STORAGE_DTYPES = ("uint8", "int8", "float16", "bfloat16", "float32")
LOAD_DTYPES = ("float32", "float16", "bfloat16")


@dataclass(frozen=True)
class QuantizationSpec:
    """bitsandbytes 4-bit settings of a quantized base.

    Attributes:
        quant_type: nf4 or fp4.
        blocksize: Entries per absmax block (bitsandbytes' Params4bit default: 64).
        double_quant: The block absmaxes are quantized again (`bnb_4bit_use_double_quant`).
        quant_storage: dtype the packed 4-bit values are stored in (`bnb_4bit_quant_storage`).
        dtype: dtype the weight had when it was quantized (the model's load dtype); the dequantized weight has
            it too.
    """

    quant_type: str = "nf4"
    blocksize: int = 64
    double_quant: bool = True
    quant_storage: str = "uint8"
    dtype: str = "float32"

    def write(self, directory: str | Path) -> Path:
        """Write DIRECTORY/quantization.json (atomically); returns its path."""
        from deltarank.io.atomic import write_json

        path = Path(directory) / QUANTIZATION_FILE
        write_json(path, {"schema": SCHEMA, **asdict(self)}, indent=2)
        return path


# What `deltarank train --method qlora` uses (QLoRA's NF4 with double quantisation, weights loaded in fp32).
QLORA_NF4 = QuantizationSpec()


def read_quantization(directory: str | Path) -> QuantizationSpec | None:
    """The quantization of the base an adapter directory was trained on, or None for an unquantized base.

    Raises:
        InputError: an invalid `quantization.json`.
    """
    folder = Path(directory)
    path = folder / QUANTIZATION_FILE
    if path.is_file():
        return _parse(path)
    run = folder / RUN_FILE
    if run.is_file():
        try:
            record = json.loads(run.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            return None  # run.json is provenance only; its damage does not stop an analysis
        method = record.get("method") if isinstance(record, dict) else None
        if isinstance(method, str) and method in REGISTRY and REGISTRY[method].quantized_base:
            return QLORA_NF4
    return None


def _parse(path: Path) -> QuantizationSpec:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise InputError(path, f"invalid JSON ({exc})") from None
    if not isinstance(raw, dict) or raw.get("schema") != SCHEMA:
        raise InputError(path, f"expected a JSON object with schema {SCHEMA!r}")
    spec = QuantizationSpec(
        **{
            k: raw[k]
            for k in ("quant_type", "blocksize", "double_quant", "quant_storage", "dtype")
            if k in raw
        }
    )
    checks = (
        (spec.quant_type in QUANT_TYPES, f"quant_type must be one of {', '.join(QUANT_TYPES)}"),
        (type(spec.blocksize) is int and spec.blocksize > 0, "blocksize must be a positive integer"),
        (isinstance(spec.double_quant, bool), "double_quant must be true or false"),
        (spec.quant_storage in STORAGE_DTYPES, f"quant_storage must be one of {', '.join(STORAGE_DTYPES)}"),
        (spec.dtype in LOAD_DTYPES, f"dtype must be one of {', '.join(LOAD_DTYPES)}"),
    )
    for ok, message in checks:
        if not ok:
            raise InputError(path, message)
    return spec
