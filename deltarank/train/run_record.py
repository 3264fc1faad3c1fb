"""`run.json`: the training-cost and provenance record of one run (what comparative studies report).

Layout (`schema: deltarank.train-run/1`): method, parameters {trainable, total, trainable_fraction, base,
trainable_share_of_base}, stored_bytes (the saved weight or adapter files), tokens_seen, steps, wall_seconds, train_seconds (all sessions of a resumed run), tokens_per_second (this
session's tokens over its training seconds), peak_memory_bytes, peak_memory_kind (rss: the resident-set peak
while training; cuda_max_allocated), device, world_size, dtypes, seed, final_loss, eval_loss, model, data
(train, eval; replay: the mixed-in data and what each source trained on, `deltarank.train.replay`),
config (resolved), optimizer (every optimizer and schedule setting: `deltarank.train.optimizers.optimizer_record`),
versions, git_commit, git_dirty, created, resumed_from_step.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import platform
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deltarank.io.model_ref import RUN_RECORD

if TYPE_CHECKING:
    from deltarank.train.callbacks import CostCallback
    from deltarank.train.config import TrainConfig
    from deltarank.train.models import ModelSource

SCHEMA = "deltarank.train-run/1"
RUN_JSON = RUN_RECORD  # io.model_ref reads it (read_run_record), this module writes it
PACKAGES = ("deltarank", "torch", "transformers", "peft", "accelerate", "safetensors", "tokenizers", "gguf")
GIT_TIMEOUT_S = 5
COMPUTE = {"fp32": "float32", "bf16-mixed": "bfloat16 autocast", "fp16-mixed": "float16 autocast"}


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages a run depends on (None when missing), plus Python's."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit() -> tuple[str | None, bool | None]:
    """(commit, dirty) of the git checkout deltarank runs from, or (None, None) outside one."""
    root = Path(__file__).resolve().parents[2]

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(root), *args],
                capture_output=True,
                text=True,
                timeout=GIT_TIMEOUT_S,
                check=True,
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip()

    commit = git("rev-parse", "HEAD")
    if not commit:
        return None, None
    status = git("status", "--porcelain", "--untracked-files=no", "--", "deltarank")
    return commit, (bool(status) if status is not None else None)


def last_value(log_history: list[dict[str, Any]], key: str) -> float | None:
    """The newest value of `key` in a Trainer's log history."""
    for entry in reversed(log_history):
        if key in entry:
            return float(entry[key])
    return None


def run_record(
    config: TrainConfig,
    trainer: Any,
    cost: CostCallback,
    source: ModelSource,
    wall_seconds: float,
    previous_seconds: float,
    data: dict[str, Any],
) -> dict[str, Any]:
    """run.json from the trainer state after `train()`, this session's cost callback and the provenance.

    `wall_seconds` covers this `run_training` call (loading and saving included); `previous_seconds` is the
    training time before the checkpoint this session resumed from; `data` summarises the train and eval sets.
    """
    from deltarank.train.methods import base_parameter_count, parameter_counts  # peft: here, not at import
    from deltarank.train.optimizers import optimizer_record

    state = trainer.state
    trainable, total = parameter_counts(trainer.model)
    base = base_parameter_count(trainer.model, config.method)
    dtype = next(p.dtype for p in trainer.model.parameters() if p.requires_grad)
    commit, dirty = git_commit()
    return {
        "schema": SCHEMA,
        "method": config.method,
        "parameters": {
            "trainable": trainable,
            "total": total,
            "trainable_fraction": trainable / max(total, 1),
            "base": base,
            "trainable_share_of_base": trainable / max(base, 1),
        },
        "stored_bytes": stored_bytes(Path(config.output_dir)),
        "tokens_seen": int(state.num_input_tokens_seen),
        "steps": int(state.global_step),
        "wall_seconds": wall_seconds,
        "train_seconds": previous_seconds + cost.seconds,
        "tokens_per_second": cost.tokens / cost.seconds if cost.seconds > 0 else None,
        "peak_memory_bytes": cost.peak_bytes,
        "peak_memory_kind": cost.peak_kind,
        "device": str(trainer.args.device),
        "world_size": int(trainer.args.world_size),
        "dtypes": {
            "master_weights": str(dtype).removeprefix("torch."),
            "compute": COMPUTE[config.mixed_precision],
        },
        "seed": config.seed,
        "final_loss": last_value(state.log_history, "loss"),
        "eval_loss": last_value(state.log_history, "eval_loss"),
        "model": source.describe(),
        "data": data,
        "config": config.to_dict(),
        "optimizer": optimizer_record(config, trainer),
        "versions": package_versions(),
        "git_commit": commit,
        "git_dirty": dirty,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


WEIGHT_SUFFIXES = (".safetensors", ".bin")


def stored_bytes(output_dir: Path) -> int:
    """Bytes of the trained weights a run saved in `output_dir` (model, adapter; checkpoints left out)."""
    return sum(p.stat().st_size for p in output_dir.glob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES)


def write_run_record(output_dir: Path, record: dict[str, Any]) -> Path:
    """Write run.json atomically and return its path."""
    from deltarank.io.atomic import finite, write_json

    path = output_dir / RUN_JSON
    write_json(path, finite(record), indent=2)  # a NaN loss is written as null: never lose a trained run
    return path
