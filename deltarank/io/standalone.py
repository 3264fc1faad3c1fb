"""Adapters whose learned matrices are analysed on their own: they add parameters and change no base weight.

- Prompt-based peft adapters (PROMPT_TUNING, P_TUNING, PREFIX_TUNING): `adapter_model.safetensors` holds
  `prompt_embeddings`, the learned virtual-token matrix as the model uses it (peft saves P-tuning's and a
  projected prefix's encoder output, not the encoder). Prompt tuning and P-tuning: (tokens, hidden); prefix
  tuning: (tokens, layers·2·kv_dim), whose columns are, per layer, its key block then its value block (peft's
  `get_prompt` view), also listed one block at a time.
- deltarank's bottleneck adapters (`bottleneck_adapter.safetensors` + `bottleneck_config.json`, written by
  `deltarank.train.bottleneck`): per adapter its down (size, hidden) and up (hidden, size) projections and
  their product up·down (hidden, hidden), the linear part of what it adds to the hidden state.

Each matrix becomes one `StoredMatrix` (a pair kind of its own: no base, no ΔW).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from deltarank.errors import InputError
from deltarank.io.base import PICKLE_SUFFIXES, refuse_pickle
from deltarank.io.naming import Selection
from deltarank.io.peft_methods import PROMPT_TYPES
from deltarank.io.safetensors_file import SafetensorsSource

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PROMPT_KEY = "prompt_embeddings"
# peft types whose saved `prompt_embeddings` is the virtual-token matrix.
VIRTUAL_TOKEN_TYPES = ("PROMPT_TUNING", "P_TUNING", "PREFIX_TUNING")
BOTTLENECK_WEIGHTS = "bottleneck_adapter.safetensors"
BOTTLENECK_CONFIG = "bottleneck_config.json"
BOTTLENECK_SCHEMA = "deltarank.bottleneck-adapter/1"
BOTTLENECK_ATTRIBUTE = "bottleneck_adapter"
_BOTTLENECK_KEY = re.compile(rf"^(?P<block>.+)\.{BOTTLENECK_ATTRIBUTE}\.(?P<side>down|up)\.weight$")


@dataclass(frozen=True)
class StoredMatrix:
    """One learned matrix of a standalone adapter, analysed as it is (not a delta).

    Attributes:
        name: Record name, e.g. `prompt_embeddings`, `prompt_embeddings.layers.0.key`,
            `model.layers.0.self_attn.bottleneck_adapter.down.weight`.
        label: Module label of its record (what tables and figures group by), e.g. `virtual_tokens`,
            `key`, `self_attn.down`.
        kind: virtual_tokens, bottleneck_down, bottleneck_up or bottleneck_product.
        keys: (role, safetensors key) of the tensors it is formed from: `matrix`, or `up` and `down`.
        shape: Its shape (rows, cols).
        dtype: Stored dtype of its tensors.
        columns: (start, stop) when the record is a column block of the stored matrix (a prefix layer's key or
            value), else None.
    """

    name: str
    label: str
    kind: str
    keys: tuple[tuple[str, str], ...]
    shape: tuple[int, int]
    dtype: str
    columns: tuple[int, int] | None = None

    @property
    def base_key(self) -> str:
        """The first stored key (groups the reads; there is no base)."""
        return self.keys[0][1]

    @property
    def base_dtype(self) -> str:
        """Stored dtype (no base: the matrix itself)."""
        return self.dtype

    @property
    def tuned_dtype(self) -> str:
        """Stored dtype."""
        return self.dtype


def is_standalone_adapter(path: str | Path) -> bool:
    """True for a bottleneck adapter directory or a peft adapter directory of a prompt-based type."""
    folder = Path(path)
    if not folder.is_dir():
        return False
    if (folder / BOTTLENECK_CONFIG).is_file():
        return True
    return prompt_type(folder) is not None


def prompt_type(folder: Path) -> str | None:
    """The peft type of a prompt-based adapter directory (any of peft's prompt types), else None."""
    config = folder / ADAPTER_CONFIG
    if not config.is_file():
        return None
    try:
        raw = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None  # the adapter reader reports it
    peft_type = str(raw.get("peft_type", "")).upper() if isinstance(raw, dict) else ""
    return peft_type if peft_type in PROMPT_TYPES else None


class StandaloneAdapter:
    """A prompt-based or bottleneck adapter directory, read one matrix at a time.

    Raises:
        InputError: a prompt type whose tensors are not a virtual-token matrix, a missing or pickled weights
            file, or tensors that do not fit together.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if (self.path / BOTTLENECK_CONFIG).is_file():
            self.what = "bottleneck adapter"
            self._file = self._open(BOTTLENECK_WEIGHTS, "adapter_model")
            self.config = self._config(BOTTLENECK_CONFIG)
            self.matrices = self._bottleneck()
        else:
            self.what = f"{prompt_type(self.path)} adapter"
            self.config = self._config(ADAPTER_CONFIG)
            peft_type = str(self.config.get("peft_type", "")).upper()
            if peft_type not in VIRTUAL_TOKEN_TYPES:
                raise InputError(
                    self.path,
                    f"PEFT type {peft_type!r} is not read (virtual-token spectra: {', '.join(VIRTUAL_TOKEN_TYPES)})",
                )
            self._file = self._open(ADAPTER_WEIGHTS, "adapter_model")
            self.matrices = self._virtual_tokens(peft_type)
        self.weights_path = self._file.path
        self.weights: SafetensorsSource = self._file

    def _open(self, name: str, stem: str) -> SafetensorsSource:
        weights = self.path / name
        if not weights.is_file():
            pickles = [f for f in self.path.glob(f"{stem}*") if f.suffix in PICKLE_SUFFIXES]
            if pickles:
                raise refuse_pickle(pickles[0])
            raise InputError(self.path, f"adapter directory has no {name}")
        return SafetensorsSource(weights)

    def _config(self, name: str) -> dict[str, object]:
        return read_adapter_config(self.path / name)

    def _matrix_info(self, key: str) -> tuple[tuple[int, int], str]:
        info = self._file.info(key)
        if len(info.shape) != 2 or not info.readable:
            raise InputError(self._file.path, f"tensor {key!r} is not a readable matrix (shape {info.shape})")
        return (int(info.shape[0]), int(info.shape[1])), info.dtype

    def _virtual_tokens(self, peft_type: str) -> list[StoredMatrix]:
        if PROMPT_KEY not in self._file.names():
            raise InputError(self._file.path, f"holds no {PROMPT_KEY} tensor")
        shape, dtype = self._matrix_info(PROMPT_KEY)
        keys = (("matrix", PROMPT_KEY),)
        matrices = [StoredMatrix(PROMPT_KEY, "virtual_tokens", "virtual_tokens", keys, shape, dtype)]
        layers, width = self.config.get("num_layers"), self.config.get("token_dim")
        prefix = peft_type == "PREFIX_TUNING" and isinstance(layers, int) and isinstance(width, int)
        # one decoder stack: [layer 0 key | layer 0 value | layer 1 key | ...], each `token_dim` wide
        if prefix and isinstance(layers, int) and isinstance(width, int) and shape[1] == layers * 2 * width:
            for layer in range(layers):
                for side, part in (("key", 0), ("value", 1)):
                    start = (2 * layer + part) * width
                    matrices.append(
                        StoredMatrix(
                            f"{PROMPT_KEY}.layers.{layer}.{side}",
                            side,
                            "virtual_tokens",
                            keys,
                            (shape[0], width),
                            dtype,
                            (start, start + width),
                        )
                    )
        return matrices

    def _bottleneck(self) -> list[StoredMatrix]:
        sides: dict[str, dict[str, str]] = {}
        for key in self._file.names():
            if m := _BOTTLENECK_KEY.match(key):
                sides.setdefault(m["block"], {})[m["side"]] = key
        if not sides:
            raise InputError(self._file.path, "holds no bottleneck adapter down/up weights")
        matrices = []
        for block, keys in sides.items():
            if set(keys) != {"down", "up"}:
                raise InputError(self._file.path, f"adapter {block!r} lacks its down or up weight")
            (size, hidden), dtype = self._matrix_info(keys["down"])
            up_shape, _ = self._matrix_info(keys["up"])
            if up_shape != (hidden, size):
                raise InputError(
                    self._file.path,
                    f"adapter {block!r}: up {up_shape} does not fit down {(size, hidden)}",
                )
            where = block.rsplit(".", 1)[-1]  # self_attn / mlp
            prefix = f"{block}.{BOTTLENECK_ATTRIBUTE}"
            for side in ("down", "up"):
                matrices.append(
                    StoredMatrix(
                        f"{prefix}.{side}.weight",
                        f"{where}.{side}",
                        f"bottleneck_{side}",
                        (("matrix", keys[side]),),
                        up_shape if side == "up" else (size, hidden),
                        dtype,
                    )
                )
            matrices.append(
                StoredMatrix(
                    f"{prefix}.product",
                    f"{where}.product",
                    "bottleneck_product",
                    (("up", keys["up"]), ("down", keys["down"])),
                    (hidden, hidden),
                    dtype,
                )
            )
        return matrices

    def selected(self, selection: Selection) -> list[StoredMatrix]:
        """The matrices `--include` / `--exclude` keep (all of them by default: none is a base weight)."""
        chosen = Selection(include=selection.include or ".", exclude=selection.exclude)
        return [m for m in self.matrices if chosen.wants(m.name, 2)]

    def read(self, key: str) -> torch.Tensor:
        """One stored tensor in its stored dtype."""
        return self._file.read(key)


def read_adapter_config(path: Path) -> dict[str, object]:
    """A JSON object config of an adapter directory: `bottleneck_config.json` (written by
    `deltarank.train.bottleneck.save_adapter`) or peft's `adapter_config.json`.

    Raises:
        InputError: unreadable, not JSON, or not a JSON object.
    """
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise InputError(path, f"invalid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise InputError(path, "expected a JSON object")
    return raw
