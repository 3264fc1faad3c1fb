"""`MemorySource`: tensors already in memory (a live model's weights or adapter) behind the `TensorSource`
protocol, so that the readers' pairing and the analysis' delta forms take them as they take a file.

Nothing is copied when the source is made; `read` hands out a detached tensor on the host (a view of the
tensor itself when it is already there), in its own dtype, which is also the stored dtype label `info` gives.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from deltarank.io.base import TensorInfo
from deltarank.io.dtypes import SAFETENSORS_DTYPES

# torch dtype -> safetensors dtype code (the labels a file of these tensors would carry).
DTYPE_LABELS: dict[torch.dtype, str] = {dtype: code for code, dtype in SAFETENSORS_DTYPES.items()}


class MemorySource:
    """In-memory tensors by name, read one at a time.

    Args:
        path: What the tensors stand for (a run directory, `<model>@step-N`): errors name it.
        tensors: name -> tensor; the names are kept as given (pairing canonicalises them as a file's).
    """

    def __init__(self, path: str | Path, tensors: Mapping[str, torch.Tensor]) -> None:
        self.path = Path(path)
        self._tensors = dict(tensors)

    def names(self) -> list[str]:
        return list(self._tensors)

    def info(self, name: str) -> TensorInfo:
        tensor = self._tensors[name]
        label = DTYPE_LABELS.get(tensor.dtype, str(tensor.dtype).removeprefix("torch.").upper())
        return TensorInfo(name, tuple(tensor.shape), label, self.path, tensor.dtype in DTYPE_LABELS)

    def read(self, name: str) -> torch.Tensor:
        return self._tensors[name].detach().cpu()
