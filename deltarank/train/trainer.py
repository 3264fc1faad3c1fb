"""`run_training(config)`: one fine-tuning run on `transformers.Trainer`, top to bottom.

check the output directory (and, on --resume, the run it holds) → resolve the model → tokenize the data → load
the model in fp32 (`builtin:self-samples` is drawn from it here: `deltarank.train.builtin_self_samples`) → mix in
replay data (`deltarank.train.replay`) → wrap it
(targets resolved) → only then create the output directory → pick padding-free or
padded batches (`deltarank.train.batching`) → Trainer.train (a checkpoint every 10% of the steps unless
--save-steps says otherwise) → save the final weights (fp32 safetensors for full, a PEFT adapter for LoRA) →
write run.json.

Because this is a plain `transformers.Trainer`, `accelerate launch -m deltarank train ...` runs it on many
processes (DDP, FSDP, DeepSpeed through an accelerate config) with no code of ours.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deltarank.io.atomic import refuse_overlap
from deltarank.io.hub import download_missing
from deltarank.io.run_directory import SELF_SAMPLES
from deltarank.train.arguments import sequences_needed, training_arguments
from deltarank.train.batching import make_collator
from deltarank.train.builtin_self_samples import (
    SamplingPlan,
    is_self_samples,
    self_samples,
    write_self_samples,
)
from deltarank.train.callbacks import (
    CheckpointTidier,
    CostCallback,
    EvalAtEndCallback,
    ProgressCallback,
    TrainLogCallback,
    remove_training_args,
)
from deltarank.train.config import TrainConfig
from deltarank.train.data import FlatCollator, PaddingCollator, TokenizedDataset, build_dataset
from deltarank.train.formats import IGNORE_INDEX
from deltarank.train.methods import (
    Calibration,
    adapt_trainer,
    init_record,
    method_callbacks,
    quantization_config,
    wrap_model,
)
from deltarank.train.models import load_model, load_tokenizer, resolve_model
from deltarank.train.rank_tracking import tracking_callbacks
from deltarank.train.replay import REPLAY_SAMPLES, mix_replay
from deltarank.train.run_claim import OutputClaim, is_main_rank
from deltarank.train.run_dir import (
    CONFIG_NAME,
    last_complete_checkpoint,
    plan_run_dir,
    prepare_output_dir,
)
from deltarank.train.run_record import run_record, write_run_record
from deltarank.train.saving import DefaultSaves, OnFirstSave, OnTrainBegin

logger = logging.getLogger(__name__)

__all__ = [
    "CONFIG_NAME",
    "TrainResult",
    "TrainingInterrupted",
    "last_complete_checkpoint",
    "prepare_output_dir",
]


@dataclass(frozen=True)
class TrainResult:
    """What a run produced: its output directory and the run.json record.

    `finished_before` is True when `--resume` found the run finished and did nothing.
    """

    output_dir: Path
    run: dict[str, Any]
    is_main_process: bool = True
    finished_before: bool = False

    @property
    def final_loss(self) -> float | None:
        return self.run.get("final_loss")


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) stopped a run: where, and the checkpoint it kept (None: nothing was kept).

    Args:
        step: The optimizer steps done, or None when training had not begun.
        max_steps: The run's steps.
        checkpoint: The newest complete checkpoint, from which `--resume` continues.
    """

    def __init__(self, step: int | None, max_steps: int | None, checkpoint: Path | None) -> None:
        self.step = step
        self.max_steps = max_steps
        self.checkpoint = checkpoint
        where = f"at step {step}/{max_steps}" if step is not None else "before training began"
        kept = f"{checkpoint.name} kept" if checkpoint is not None else "nothing was kept"
        super().__init__(f"interrupted {where}; {kept}")

    def __reduce__(self) -> tuple[Any, ...]:  # crosses process boundaries (a study's workers) intact
        return (type(self), (self.step, self.max_steps, self.checkpoint))


def run_training(
    config: TrainConfig, callbacks: Sequence[Any] = (), inputs: Sequence[str | Path | None] = ()
) -> TrainResult:
    """Fine-tune a model as `config` says and write its outputs to `config.output_dir`.

    Every input (the output directory against the inputs, the run resumed, the model, the data, the method's
    targets) is checked before the output directory is created or replaced; a run that fails or is
    interrupted before its first checkpoint takes back what it created (`run_claim.OutputClaim`). `--resume`
    of a finished run does nothing (`TrainResult.finished_before`).

    Args:
        config: The run's configuration (method-dependent defaults are filled in here).
        callbacks: Extra `transformers.TrainerCallback`s (tests use one to interrupt a run).
        inputs: Further input paths the output must not overlap (the `--config` file).

    Returns:
        The output directory and the run.json record.

    Raises:
        DeltarankError: a bad model, data, option or output directory (before any training starts).
        TrainingInterrupted: Ctrl-C or SIGTERM during training (a KeyboardInterrupt saying what was kept).
    """
    started = time.perf_counter()
    config = config.resolved()
    output_dir = Path(config.output_dir)
    refuse_overlap(output_dir, [config.model, config.data, config.eval_data, config.replay_data, *inputs])
    plan = plan_run_dir(config)
    if plan.finished is not None:
        return TrainResult(output_dir, plan.finished, is_main_rank(), finished_before=True)
    config = dataclasses.replace(config, **plan.inherited)
    checkpoint = plan.checkpoint
    if config.download:
        download_missing([config.model])
    source = resolve_model(config.model)
    refuse_overlap(output_dir, [source.weights])
    args = training_arguments(config)
    tokenizer = load_tokenizer(source)
    needed = sequences_needed(config, args)
    sampling = SamplingPlan.of(config, tokenizer, needed) if is_self_samples(config.data) else None
    train_set, eval_set, data = _datasets(config, tokenizer, needed)
    from transformers import set_seed

    set_seed(config.seed)  # LoRA's A is initialised before the Trainer seeds anything
    base = set_attention_dropout(load_model(source, quantization_config(config.method)), config)
    samples = None
    if sampling is not None:  # drawn from the base before any adapter (a private generator: the seed stays)
        saved = output_dir / SELF_SAMPLES if checkpoint is not None else None
        samples = self_samples(sampling, base, tokenizer, args.device, saved)
        train_set, data["train"] = samples.dataset, samples.summary()
    saved_replay = output_dir / REPLAY_SAMPLES if checkpoint is not None else None
    replay = mix_replay(config, train_set, tokenizer, base, args.device, needed, saved_replay)
    if replay is not None:  # general data mixed in (deltarank.train.replay), before any adapter
        train_set = replay.dataset
    data["replay"] = replay.record if replay is not None else None
    model = wrap_model(base, config, Calibration(train_set, tokenizer.pad_token_id))  # eva/corda read it
    claim = OutputClaim(output_dir, replace=config.force and not config.resume)
    claim.create()  # every input is known to be usable: only now is anything written
    trainer: Any = None
    try:
        if checkpoint is None and args.process_index == 0:
            config.save(output_dir / CONFIG_NAME)
            if samples is not None:
                write_self_samples(output_dir / SELF_SAMPLES, samples, tokenizer)
            if replay is not None:
                replay.write(output_dir, tokenizer)
        collator = make_collator(config.batching, model, tokenizer.pad_token_id)
        args.include_num_input_tokens_seen = collator.tokens_seen
        cost = CostCallback()
        resume_step = _checkpoint_step(checkpoint)
        train_log = TrainLogCallback(output_dir, resume_step)
        # rank tracking copies its base before a resumed checkpoint changes the model
        tracking = tracking_callbacks(config, model, train_log)
        saves = DefaultSaves() if config.save_steps is None else None
        extra = [train_log, cost, *method_callbacks(config), *tracking, *callbacks, OnFirstSave(claim.commit)]
        if checkpoint is not None:  # the resumed run's files change only once its checkpoint has loaded
            extra.append(OnTrainBegin(lambda: config.save(output_dir / CONFIG_NAME)))
        if saves is not None:
            extra.append(saves)
        trainer = adapt_trainer(
            build_trainer(config, args, model, tokenizer, collator, train_set, eval_set, extra), config
        )
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        trainer.save_model(str(output_dir))
    except KeyboardInterrupt:
        state: Any = getattr(trainer, "state", None)
        began = state is not None and bool(state.max_steps)
        claim.rollback()
        kept = last_complete_checkpoint(output_dir) if output_dir.is_dir() else None
        raise TrainingInterrupted(
            state.global_step if began else None, state.max_steps if began else None, kept
        ) from None
    except BaseException:
        claim.rollback()
        raise
    claim.commit()
    if trainer.is_world_process_zero():
        remove_training_args(output_dir)
    record = run_record(config, trainer, cost, source, time.perf_counter() - started, train_log.offset, data)
    record["resumed_from_step"] = resume_step
    record["batching"] = collator.name
    if (lora_init := init_record(model)) is not None:  # --lora-init, and whether the adapter is converted
        record["lora_init"] = lora_init
    record["save_interval"] = (
        saves.record()
        if saves is not None
        else {"default": False, "steps": config.save_steps or None, "minutes": None, "keep": None}
    )
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
    if config.save_steps != 0:
        trainer.add_callback(CheckpointTidier(config.keep_optimizer_state))
    return trainer


def _progress_mode(mode: str) -> str:
    if mode != "auto":
        return mode
    return "bar" if sys.stderr.isatty() else "lines"


def _datasets(
    config: TrainConfig, tokenizer: Any, train_sequences: int | None
) -> tuple[TokenizedDataset, TokenizedDataset | None, dict[str, Any]]:
    """The train set, the eval set (capped at `max_eval_sequences`) and their summaries for run.json
    (`builtin:self-samples` is drawn from the model once it is loaded: an empty train set here)."""
    eval_set, eval_summary = _eval_set(config, tokenizer)
    if is_self_samples(config.data):
        return TokenizedDataset([]), eval_set, {"train": None, "eval": eval_summary}
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
    return train_set, eval_set, {"train": train_summary.to_dict(), "eval": eval_summary}


def _eval_set(config: TrainConfig, tokenizer: Any) -> tuple[TokenizedDataset | None, dict[str, Any] | None]:
    """The eval set (capped at `max_eval_sequences`) and its summary, or (None, None) without `eval_data`."""
    if not config.eval_data:
        return None, None
    eval_set, eval_summary = build_dataset(
        config.eval_data, tokenizer, config.seq_len, config.max_eval_sequences
    )
    cap = config.max_eval_sequences
    if cap is not None and len(eval_set) > cap:
        eval_set = TokenizedDataset(eval_set.examples[:cap])
    return eval_set, eval_summary.to_dict()


def _checkpoint_step(checkpoint: Path | None) -> int | None:
    return int(checkpoint.name.rsplit("-", 1)[1]) if checkpoint is not None else None
