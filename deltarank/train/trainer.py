"""`run_training(config)`: one fine-tuning run on `transformers.Trainer`, top to bottom.

resolve the model → tokenize the data → load the model in fp32 → wrap it (LoRA only) → pick padding-free or
padded batches (`deltarank.train.batching`) → Trainer.train → save the final weights (fp32 safetensors for
full, a PEFT adapter for LoRA) → write run.json.

Because this is a plain `transformers.Trainer`, `accelerate launch -m deltarank train ...` runs it on many
processes (DDP, FSDP, DeepSpeed through an accelerate config) with no code of ours.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deltarank.errors import DeltarankError
from deltarank.io.hub import download_missing
from deltarank.train.batching import make_collator
from deltarank.train.callbacks import (
    CheckpointTidier,
    CostCallback,
    EvalAtEndCallback,
    ProgressCallback,
    TrainLogCallback,
    remove_training_args,
)
from deltarank.train.config import TrainConfig
from deltarank.train.config_file import load_train_config
from deltarank.train.data import FlatCollator, PaddingCollator, TokenizedDataset, build_dataset
from deltarank.train.formats import IGNORE_INDEX
from deltarank.train.methods import adapt_trainer, method_callbacks, quantization_config, wrap_model
from deltarank.train.models import load_model, load_tokenizer, resolve_model
from deltarank.train.rank_tracking import tracking_callbacks
from deltarank.train.run_record import run_record, write_run_record

logger = logging.getLogger(__name__)

CONFIG_NAME = "train_config.yaml"


@dataclass(frozen=True)
class TrainResult:
    """What a run produced: its output directory and the run.json record."""

    output_dir: Path
    run: dict[str, Any]
    is_main_process: bool = True

    @property
    def final_loss(self) -> float | None:
        return self.run.get("final_loss")


def run_training(config: TrainConfig, callbacks: Sequence[Any] = ()) -> TrainResult:
    """Fine-tune a model as `config` says and write its outputs to `config.output_dir`.

    Args:
        config: The run's configuration (method-dependent defaults are filled in here).
        callbacks: Extra `transformers.TrainerCallback`s (tests use one to interrupt a run).

    Returns:
        The output directory and the run.json record.

    Raises:
        DeltarankError: a bad model, data, option or output directory (before any training starts).
    """
    started = time.perf_counter()
    config = config.resolved()
    output_dir = Path(config.output_dir)
    checkpoint = prepare_output_dir(output_dir, config.resume, config.force)
    if config.download:
        download_missing([config.model])
    source = resolve_model(config.model)
    args = training_arguments(config)
    tokenizer = load_tokenizer(source)
    train_set, eval_set, data = _datasets(config, tokenizer, sequences_needed(config, args))
    create_output_dir(output_dir, replace=config.force and checkpoint is None)
    if checkpoint is not None:
        _warn_if_config_changed(output_dir, config)
    if args.process_index == 0:
        config.save(output_dir / CONFIG_NAME)
    from transformers import set_seed

    set_seed(config.seed)  # LoRA's A is initialised before the Trainer seeds anything
    model = wrap_model(
        set_attention_dropout(load_model(source, quantization_config(config.method)), config), config
    )
    collator = make_collator(config.batching, model, tokenizer.pad_token_id)
    args.include_num_input_tokens_seen = collator.tokens_seen
    cost = CostCallback()
    resume_step = _checkpoint_step(checkpoint)
    train_log = TrainLogCallback(output_dir, resume_step)
    tracking = tracking_callbacks(config, model, train_log)  # before a resumed checkpoint changes the model
    extra = [train_log, cost, *method_callbacks(config), *tracking, *callbacks]
    trainer = adapt_trainer(
        build_trainer(config, args, model, tokenizer, collator, train_set, eval_set, extra), config
    )
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    trainer.save_model(str(output_dir))
    if trainer.is_world_process_zero():
        remove_training_args(output_dir)
    record = run_record(config, trainer, cost, source, time.perf_counter() - started, train_log.offset, data)
    record["resumed_from_step"] = resume_step
    record["batching"] = collator.name
    if trainer.is_world_process_zero():
        write_run_record(output_dir, record)
        logger.info("wrote %s", output_dir)
    return TrainResult(output_dir, record, trainer.is_world_process_zero())


def set_attention_dropout(model: Any, config: TrainConfig) -> Any:
    """Apply `attention_dropout` to the model's config and to every attention module (which copied it at
    construction: Llama, Gemma 3 and most transformers models read `self.attention_dropout` in forward)."""
    if config.attention_dropout is None:
        return model
    model.config.attention_dropout = config.attention_dropout
    for module in model.modules():
        if isinstance(getattr(module, "attention_dropout", None), float):
            module.attention_dropout = config.attention_dropout
    return model


def prepare_output_dir(output_dir: Path, resume: bool, force: bool = False) -> Path | None:
    """Check that the output directory can take a new run, or find the checkpoint to resume from.

    A non-empty directory is refused unless `force` (its files are then replaced by `create_output_dir`, once
    every input check has passed) or `resume`.

    Returns:
        The newest `checkpoint-<step>` when resuming, else None.

    Raises:
        DeltarankError: resuming without a usable checkpoint, or a fresh run into a non-empty directory.
    """
    if resume:
        last = last_complete_checkpoint(output_dir) if output_dir.is_dir() else None
        if last is None:
            raise DeltarankError(f"--resume: no complete checkpoint-<step> directory in {output_dir}")
        if not (Path(last) / "optimizer.pt").is_file() and not any(Path(last).glob("global_step*")):
            raise DeltarankError(f"--resume: {last} holds no optimizer state (keep_optimizer_state=none)")
        return Path(last)
    main_rank = os.environ.get("RANK", "0") == "0"  # other ranks would see rank 0's first files
    if main_rank and output_dir.is_dir() and any(output_dir.iterdir()) and not force:
        raise DeltarankError(
            f"{output_dir}: already exists (use --force to replace it, or --resume to continue its run)"
        )
    existing = next(p for p in (output_dir, *output_dir.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        raise DeltarankError(
            f"cannot create output directory {output_dir}: {existing} is not a writable directory"
        )
    return None  # created by `create_output_dir` once the model and data are known to be usable


def last_complete_checkpoint(output_dir: Path) -> Path | None:
    """The newest `checkpoint-<step>` whose save finished (Trainer writes trainer_state.json last).

    A newer one that a kill cut short mid-save is skipped with a warning (the next save overwrites it).
    """
    found = []
    for folder in output_dir.glob("checkpoint-*"):
        step = folder.name.removeprefix("checkpoint-")
        if folder.is_dir() and step.isdigit():
            found.append((int(step), folder))
    for _, folder in sorted(found, reverse=True):
        if (folder / "trainer_state.json").is_file():
            return folder
        logger.warning("skipping %s: its save did not finish (the run was killed while writing it)", folder)
    return None


def create_output_dir(output_dir: Path, replace: bool = False) -> None:
    """Create the output directory (after every input check, so a bad input leaves nothing behind); with
    `replace` (`--force`), an existing directory's files go first."""
    try:
        if replace and output_dir.is_dir() and os.environ.get("RANK", "0") == "0":
            shutil.rmtree(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DeltarankError(f"cannot create output directory {output_dir}: {exc.strerror}") from exc


def training_arguments(config: TrainConfig) -> Any:
    """The `transformers.TrainingArguments` of a resolved config.

    Raises:
        DeltarankError: cuda asked for but not available, or an option transformers rejects.
    """
    import torch
    from transformers import TrainingArguments

    if config.device.startswith("cuda") and not torch.cuda.is_available():
        raise DeltarankError(f"--device {config.device}: no CUDA device is available")
    if config.device.startswith("cuda:"):
        index = int(config.device[5:])
        if index >= torch.cuda.device_count():
            raise DeltarankError(f"--device {config.device}: only {torch.cuda.device_count()} CUDA device(s)")
        torch.cuda.set_device(index)  # the Trainer's single-process device is the current CUDA device
    _check_reporter(config.report_to)
    eval_steps = config.eval_steps or config.save_steps
    on_cuda = config.device != "cpu" and torch.cuda.is_available()
    amp = config.mixed_precision != "fp32"
    use_cpu = config.device == "cpu" or (amp and not on_cuda)  # bf16 on CPU needs it
    try:
        return TrainingArguments(
            output_dir=config.output_dir,
            per_device_train_batch_size=config.batch_size,
            per_device_eval_batch_size=config.batch_size,
            gradient_accumulation_steps=config.grad_accum,
            learning_rate=config.learning_rate,
            max_steps=config.max_steps or -1,
            num_train_epochs=config.epochs or 1.0,
            lr_scheduler_type=config.lr_scheduler,
            warmup_steps=config.warmup,
            weight_decay=config.weight_decay,
            max_grad_norm=config.max_grad_norm,
            optim=config.optim,
            seed=config.seed,
            data_seed=config.seed,
            logging_strategy="steps",
            logging_steps=config.logging_steps,
            save_strategy="steps" if config.save_steps else "no",
            save_steps=config.save_steps or 500,
            save_only_model=config.keep_optimizer_state == "none",
            eval_strategy="steps" if (config.eval_data and eval_steps) else "no",
            eval_steps=eval_steps,
            include_num_input_tokens_seen="non_padding",
            bf16=config.mixed_precision == "bf16-mixed",
            fp16=config.mixed_precision == "fp16-mixed",
            use_cpu=use_cpu,
            **checkpointing_argument(TrainingArguments, config.gradient_checkpointing),
            dataloader_pin_memory=on_cuda,
            remove_unused_columns=False,
            disable_tqdm=True,
            report_to=config.report_to,
        )
    except ValueError as exc:
        raise DeltarankError(f"invalid training option: {' '.join(str(exc).split())}") from exc


def checkpointing_argument(arguments_class: Any, enabled: bool) -> dict[str, bool]:
    """Activation checkpointing under the name the installed transformers uses.

    transformers renamed `gradient_checkpointing` to `activation_checkpointing` in its 5.x series; both spell the
    same switch, and a GPU image with an older 5.x (seen: 5.17) rejects the new name.
    """
    names = {f.name for f in dataclasses.fields(arguments_class)}
    name = "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
    return {name: enabled}


REPORTER_PACKAGES = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",)}


def _check_reporter(report_to: str) -> None:
    """--report-to tensorboard|wandb needs its package (event files go to <output>/runs/ for tensorboard)."""
    import importlib.util

    packages = REPORTER_PACKAGES.get(report_to, ())
    if packages and not any(importlib.util.find_spec(p) for p in packages):
        raise DeltarankError(f"--report-to {report_to} needs `pip install {packages[0]}`")


def sequences_needed(config: TrainConfig, args: Any) -> int | None:
    """Sequences a `max_steps` run consumes (built-in data is produced only up to this); None for epochs."""
    if config.max_steps is None:
        return None
    return config.max_steps * config.batch_size * config.grad_accum * args.world_size


def build_trainer(
    config: TrainConfig,
    args: Any,
    model: Any,
    tokenizer: Any,
    collator: FlatCollator | PaddingCollator,
    train_set: TokenizedDataset,
    eval_set: TokenizedDataset | None,
    callbacks: list[Any],
) -> Any:
    """A `transformers.Trainer` with deltarank's collator and callbacks (in place of its printer and bar)."""
    from transformers import Trainer
    from transformers.trainer_callback import PrinterCallback

    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=eval_set,
        data_collator=collator,
        processing_class=tokenizer,
        callbacks=callbacks,
    )
    trainer.remove_callback(PrinterCallback)
    mode = _progress_mode(config.progress)
    if mode != "none":
        trainer.add_callback(ProgressCallback(mode))
    if eval_set is not None and args.eval_strategy == "no":
        trainer.add_callback(EvalAtEndCallback())
    if config.save_steps:
        trainer.add_callback(CheckpointTidier(config.keep_optimizer_state))
    return trainer


def _progress_mode(mode: str) -> str:
    if mode != "auto":
        return mode
    return "bar" if sys.stderr.isatty() else "lines"


def _datasets(
    config: TrainConfig, tokenizer: Any, train_sequences: int | None
) -> tuple[TokenizedDataset, TokenizedDataset | None, dict[str, Any]]:
    """The train set, the eval set (capped at `max_eval_sequences`) and their summaries for run.json."""
    caps = [n for n in (train_sequences, config.max_examples) if n is not None]
    train_set, train_summary = build_dataset(config.data, tokenizer, config.seq_len, min(caps, default=None))
    if config.max_examples is not None and len(train_set) > config.max_examples:
        train_set = TokenizedDataset(train_set.examples[: config.max_examples])
        train_summary = dataclasses.replace(
            train_summary,
            sequences=len(train_set),
            tokens=sum(len(ids) for ids, _ in train_set.examples),
            trained_tokens=sum(
                sum(1 for x in labels if x != IGNORE_INDEX) for _, labels in train_set.examples
            ),
        )
    summaries: dict[str, Any] = {"train": train_summary.to_dict(), "eval": None}
    if not config.eval_data:
        return train_set, None, summaries
    eval_set, eval_summary = build_dataset(
        config.eval_data, tokenizer, config.seq_len, config.max_eval_sequences
    )
    cap = config.max_eval_sequences
    if cap is not None and len(eval_set) > cap:
        eval_set = TokenizedDataset(eval_set.examples[:cap])
    summaries["eval"] = eval_summary.to_dict()
    return train_set, eval_set, summaries


def _checkpoint_step(checkpoint: Path | None) -> int | None:
    return int(checkpoint.name.rsplit("-", 1)[1]) if checkpoint is not None else None


def _warn_if_config_changed(output_dir: Path, config: TrainConfig) -> None:
    """On --resume, name the keys that differ from the run being resumed (its saved train_config.yaml)."""
    saved = output_dir / CONFIG_NAME
    try:
        previous = load_train_config(saved).resolved()
    except DeltarankError:
        return
    changed = config.changed_keys(previous)
    if changed:
        logger.warning(
            "resuming with a changed config: %s (the result is not one uninterrupted run)", changed
        )
