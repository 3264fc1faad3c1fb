"""Fine-tuning runs whose weight deltas deltarank analyses: full fine-tuning, LoRA and the other PEFT methods
(`deltarank.train.methods`) on `transformers.Trainer`.

    from deltarank.train import TrainConfig, run_training
    result = run_training(TrainConfig(model="smollm2-135m", data="builtin:code", method="lora",
                                      output_dir="runs/lora", max_steps=80, batch_size=4, seq_len=128))
    result.run["tokens_per_second"]

Modules: config (TrainConfig), config_file (load_train_config: YAML/TOML and flags), config_validation
(the allowed values and checks), models (resolve_model, find_default_gguf), data and formats (JSONL shapes),
builtin_data (builtin:code / builtin:math and their held-out splits), methods (the model wrapping, one
function per method), targets (--target-modules, block sizes), bottleneck (Houlsby adapters), arguments
(TrainingArguments), trainer (run_training), run_dir (the output directory checked, --resume compared with the
run it continues), run_claim (the output created after every check, taken back on an early failure), saving
(the default checkpoint interval), callbacks (train_log.jsonl, cost, progress), run_record (run.json).
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "TrainConfig": "deltarank.train.config",
    "run_training": "deltarank.train.trainer",
    "TrainResult": "deltarank.train.trainer",
    "resolve_model": "deltarank.train.models",
    "find_default_gguf": "deltarank.train.models",
    "held_out_examples": "deltarank.train.builtin_data",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'deltarank.train' has no attribute {name!r}")
