"""Models ready for evaluation: the base read once, a training run's output attached to it (or loaded on its
own), in eval mode with the KV cache on, on the device the measurements run on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


class EvalModels:
    """Loads the models to evaluate, reading (and dequantizing) the base model only once.

    A peft adapter of an unquantized base is attached to the kept base model for its evaluation and detached
    afterwards (`unload`, no merge), so the base weights stay untouched (a model peft cannot unload is dropped,
    and the base read again when next needed); any other `deltarank train` output
    (a full fine-tune, a bottleneck adapter, a QLoRA adapter on its re-quantized base) is loaded on its own
    (`deltarank.train.models.load_trained`).
    """

    def __init__(self, base: Any, device: str = "cpu") -> None:
        """`base`: the base model's `ModelSource`; `device`: where the models run (auto, cpu, cuda, cuda:N)."""
        from deltarank.analysis.engine.compute import resolve_device

        self.source = base
        self.device = resolve_device(device)
        self._base: Any = None

    def base(self) -> Any:
        """The base model in fp32 eval mode."""
        if self._base is None:
            from deltarank.train.models import load_model

            self._base = ready_for_evaluation(load_model(self.source), self.device)
        return self._base

    def evaluate(self, tuned: Path | None, fn: Any) -> Any:
        """fn(model) for the base (`tuned` None) or a `deltarank train` output (or checkpoint) `tuned`."""
        from deltarank.io.adapter import is_adapter_dir
        from deltarank.io.quantization import read_quantization
        from deltarank.train.models import load_trained

        if tuned is None:
            return fn(self.base())
        if is_adapter_dir(tuned) and read_quantization(tuned) is None:
            wrapped = ready_for_evaluation(load_trained(self.source, tuned, base=self.base()), self.device)
            try:
                return fn(wrapped)
            finally:  # a method peft merges on load, or wraps without layers to unload: read the base again
                unload = getattr(wrapped, "unload", None)
                self._base = unload() if callable(unload) else None
        return fn(ready_for_evaluation(load_trained(self.source, tuned), self.device))


def ready_for_evaluation(model: Any, device: torch.device) -> Any:
    """`model` on `device`, in eval mode, with the KV cache on (training turns it off; generation needs it)."""
    model.to(device)
    model.eval()
    model.config.use_cache = True
    return model


def model_device(model: Any) -> torch.device:
    """The device a model's weights are on: where its inputs go (the CPU for a model without parameters)."""
    return next((p.device for p in model.parameters()), torch.device("cpu"))
