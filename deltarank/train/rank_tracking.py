"""`--track-rank N`: the effective ranks of every ΔW during training, every N optimizer steps, without checkpoints.

On the main process, after every N-th optimizer step (and the last), the live weights go through exactly what
`deltarank spectrum` runs on a saved run: the peft adapter is read from `get_peft_model_state_dict` by the same
reader as an adapter directory (`AdapterSource.from_state_dict`), paired with its base weights
(`plan_adapter`), read and checked (`load_pair`), formed by the method's delta form (factors for the low-rank
methods, so their σ come from the small factored SVD) and measured into the same `MatrixSpectrum` records
(`measure`, default `SpectrumOptions`: thresholds 0.5/0.9/0.99, float32, the `auto` solver of the training
device). Full fine-tuning measures a sample of its matrices (`sample_matrices`), whose base weights are copied
in fp32 when the tracker is made, before any step (or resumed checkpoint) changes them.

Each measurement appends one line to `train_log.jsonl`:

    {"step": 20, "tokens_seen": 10240, "rank_s": 0.41,
     "rank": {"q_proj": {"matrices": 30, "energy_90_median": 7.0, "noise_floor_median": 16.0,
                         "sigma_1_median": 0.12, "delta_norm_median": 0.2, ...}, ...}}

`rank` holds, per module type, the median over its matrices (`results.medians`) of every rank of the record
(`<rank>_median`), of σ₁ and of ‖ΔW‖_F; `rank_s` is the seconds the measurement took. Step 0 (ΔW = 0) is not
measured. On `--resume` the log keeps the lines up to the checkpoint's step, these included.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from transformers import TrainerCallback

from deltarank.analysis.engine.loading import load_pair
from deltarank.analysis.engine.measure import measure
from deltarank.analysis.engine.options import SpectrumOptions
from deltarank.analysis.results.medians import module_medians, rank_of
from deltarank.analysis.results.spectrum import MatrixSpectrum
from deltarank.errors import DeltarankError
from deltarank.io.adapter import AdapterSource
from deltarank.io.memory import MemorySource
from deltarank.io.naming import Selection, canonical_name, layer_index, module_type
from deltarank.io.pairing import Pair, plan_adapter, plan_dense
from deltarank.io.peft_methods import kind_needs_base
from deltarank.train.callbacks import TrainLogCallback
from deltarank.train.config import TrainConfig

logger = logging.getLogger(__name__)

# Layers whose every module type a full fine-tuning run tracks by default (the first and the last).
DEFAULT_SAMPLE_LAYERS = 2


def sample_matrices(names: Sequence[str], count: int | None = None) -> list[str]:
    """Which of a full model's weights full fine-tuning tracks: every module type of ⌈count / types⌉ evenly
    spaced layers (first and last included), in layer then module order, cut at `count`.

    Args:
        names: Canonical names of the 2-D weights the default spectrum selection takes (block weights).
        count: Matrices to track; None: every module type of the first and the last layer.

    Returns:
        The chosen names (all of them when `count` reaches their number).
    """
    types = list(dict.fromkeys(module_type(n) for n in names))
    layers = sorted({i for n in names if (i := layer_index(n)) is not None})
    wanted = count if count is not None else DEFAULT_SAMPLE_LAYERS * len(types)
    if wanted >= len(names) or not layers:
        return list(names)
    spread = min(len(layers), math.ceil(wanted / max(len(types), 1)))
    if spread == 1:
        chosen_layers = [layers[0]]
    else:
        chosen_layers = [layers[round(i * (len(layers) - 1) / (spread - 1))] for i in range(spread)]
    where = {(layer_index(n), module_type(n)): n for n in names}
    picked = [where[(layer, t)] for layer in chosen_layers for t in types if (layer, t) in where]
    return picked[:wanted]


def log_entry(records: Iterable[MatrixSpectrum]) -> dict[str, dict[str, float]]:
    """The `rank` field of a log line: per module type, the number of matrices and the medians of every rank,
    of σ₁ and of ‖ΔW‖_F."""
    records = list(records)
    keys = list(dict.fromkeys(k for r in records for k in r.ranks))
    columns: dict[str, dict[str, float]] = {
        f"{key}_median": module_medians(records, rank_of(key)) for key in keys
    }
    columns["sigma_1_median"] = module_medians(
        records, lambda r: r.singular_values[0] if r.singular_values else 0.0
    )
    columns["delta_norm_median"] = module_medians(records, lambda r: r.delta_norm)
    entry: dict[str, dict[str, float]] = {}
    for r in records:
        entry.setdefault(r.module, {"matrices": 0})["matrices"] += 1
    for column, values in columns.items():
        for module, value in values.items():
            entry[module][column] = value
    return entry


class RankTracker(TrainerCallback):
    """Measures every ΔW every `config.track_rank` optimizer steps and at the last, into the train log.

    Make it with the model as loaded and wrapped, before the Trainer exists: full fine-tuning copies the base
    weights of its sample then.

    Args:
        config: The resolved run config (`track_rank` > 0).
        model: The model to train (a peft model for the adapter methods).
        log: The run's `TrainLogCallback`, which writes the lines.
    """

    def __init__(self, config: TrainConfig, model: Any, log: TrainLogCallback) -> None:
        self.every = config.track_rank
        self.log = log
        self.label = config.output_dir
        self.full = config.method == "full"
        self.options = SpectrumOptions()
        self.base: dict[str, torch.Tensor] = {}
        self.tracked: list[str] = []
        if self.full:
            weights = dict(_weights(model))
            selection = Selection()
            eligible = [n for n, w in weights.items() if selection.wants(n, w.dim())]
            self.tracked = sample_matrices(eligible, config.track_rank_sample)
            self.base = {n: weights[n].detach().to("cpu", torch.float32, copy=True) for n in self.tracked}
        self.device = torch.device("cpu")
        self.failed = False

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        device = torch.device(args.device)
        self.device = torch.device("cpu") if device.type not in ("cpu", "cuda") else device

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        step = state.global_step
        if not state.is_world_process_zero or self.failed or step == 0:
            return
        if step % self.every and step != state.max_steps:
            return
        started = time.perf_counter()
        try:
            records = self.measure(model, step)
        except DeltarankError as exc:  # e.g. a diverged run's NaN weights: training goes on, untracked
            logger.warning("--track-rank stops at step %d: %s", step, exc)
            self.failed = True
            return
        seconds = time.perf_counter() - started
        self.log.append(
            {
                "step": step,
                "tokens_seen": state.num_input_tokens_seen,
                "rank": log_entry(records),
                "rank_s": round(seconds, 4),
            }
        )

    @torch.no_grad()
    def measure(self, model: Any, step: int) -> list[MatrixSpectrum]:
        """The spectrum records of the model's ΔW now, as `deltarank spectrum` makes them from a saved run."""
        label = f"{self.label}@step-{step}"
        tuned: MemorySource | AdapterSource
        pairs: Sequence[Pair]
        if self.full:
            weights = dict(_weights(model))
            tuned = MemorySource(label, {n: weights[n] for n in self.tracked})
            base = MemorySource(f"{self.label}@step-0", self.base)
            pairs, _ = plan_dense(base, tuned, Selection())
        else:
            tuned = live_adapter(model, label)
            base = MemorySource(f"{self.label}@step-0", base_weights(model, tuned))
            pairs, _ = plan_adapter(base, tuned, Selection())
        settings = self.options.measure_settings(self.device)
        records = []
        for pair in pairs:
            loaded = load_pair(pair, base, tuned, self.device)
            records.append(measure(pair, loaded.delta(settings.dtype), settings))
        return records


def live_adapter(model: Any, label: str) -> AdapterSource:
    """The adapter of a live peft model, read by the same reader as its saved directory."""
    from peft import get_peft_model_state_dict

    config = model.peft_config[model.active_adapter]
    raw = json.loads(json.dumps(config.to_dict(), default=_jsonable))  # what adapter_config.json holds
    return AdapterSource.from_state_dict(raw, get_peft_model_state_dict(model), label)


def base_weights(model: Any, adapter: AdapterSource) -> dict[str, torch.Tensor]:
    """The base weight of every adapted module by canonical name. A 4-bit (QLoRA) weight is dequantized when
    the delta needs it (DoRA), else stands as a shape-only placeholder (plain LoRA never reads it)."""
    found: dict[str, torch.Tensor] = {}
    for name, weight in _weights(model):
        module = adapter.modules.get(name)
        if module is None:
            continue
        if hasattr(weight, "quant_state"):  # bitsandbytes Params4bit: packed bytes, logical shape aside
            shape = tuple(weight.quant_state.shape)
            if kind_needs_base(module.kind):
                import bitsandbytes.functional as bnb_functional

                found[name] = bnb_functional.dequantize_4bit(weight.data, weight.quant_state).float()
            else:
                found[name] = torch.empty(shape, dtype=torch.float32, device="meta")
        else:
            found[name] = weight
    return found


def _weights(model: Any) -> Iterable[tuple[str, torch.Tensor]]:
    """(canonical name, parameter) of every parameter of the model (peft's `base_layer` is the base weight)."""
    for name, param in model.named_parameters():
        yield canonical_name(name), param


def _jsonable(value: Any) -> Any:
    """JSON for what peft's config dict holds besides JSON types (sets of target modules, enums)."""
    if isinstance(value, set | frozenset):
        return sorted(value)
    return getattr(value, "value", str(value))


def tracking_callbacks(config: TrainConfig, model: Any, log: TrainLogCallback) -> list[Any]:
    """The rank tracker when `config.track_rank` asks for one, else nothing."""
    return [RankTracker(config, model, log)] if config.track_rank else []
