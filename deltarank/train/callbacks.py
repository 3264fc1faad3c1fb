"""TrainerCallbacks: the training log, the cost record, progress output, eval at the end, checkpoint pruning.

Each writes only on the main process, so `accelerate launch` with many processes writes one log.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from deltarank.io.atomic import finite, json_text, write_jsonl
from deltarank.io.run_directory import TRAIN_LOG, read_train_log

logger = logging.getLogger(__name__)
progress_logger = logging.getLogger("deltarank.train.progress")

OPTIMIZER_FILES = ("optimizer.pt", "scheduler.pt", "scaler.pt")
RNG_GLOB = "rng_state*.pth"
TRAINING_ARGS_FILE = "training_args.bin"


class TrainLogCallback(TrainerCallback):
    """Appends one JSON line per logging step to `train_log.jsonl`.

    Fields: step, loss, learning_rate, grad_norm, tokens_seen, elapsed_s (and epoch); eval lines carry
    step, eval_loss, tokens_seen, elapsed_s; rank lines (`--track-rank`, see `rank_tracking`) step, tokens_seen,
    rank, rank_s. On resume, lines after the checkpoint's step are dropped when training begins (after the
    checkpoint loaded, so a failed resume leaves the log as it was) and the clock continues from the last kept
    line.
    """

    def __init__(self, output_dir: Path, resume_step: int | None = None) -> None:
        self.path = output_dir / TRAIN_LOG
        self.resume_step = resume_step
        self.offset = 0.0
        self.start = time.perf_counter()
        self.handle: Any = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.start = time.perf_counter()
        if state.is_world_process_zero:  # a resumed checkpoint has loaded: the log may be cut back now
            self.offset = _truncate_log(self.path, self.resume_step)
            self.handle = self.path.open("a", encoding="utf-8")

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        if self.handle is None or not logs:
            return
        if "loss" not in logs and "eval_loss" not in logs:
            return  # the end-of-training summary (train_runtime, ...), not a step
        entry: dict[str, Any] = {"step": state.global_step}
        for key in ("loss", "eval_loss", "learning_rate", "grad_norm", "epoch"):
            if key in logs:
                entry[key] = logs[key]
        entry["tokens_seen"] = state.num_input_tokens_seen
        entry["elapsed_s"] = round(self.offset + time.perf_counter() - self.start, 3)
        self.append(entry)

    def append(self, entry: dict[str, Any]) -> None:
        """Write one line (with a `step`, so that a resume keeps or drops it like the others); main process
        only, during training."""
        if self.handle is None:
            return
        self.handle.write(json_text(finite(entry)) + "\n")  # a NaN loss is logged as null
        self.handle.flush()

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None


def _truncate_log(path: Path, resume_step: int | None) -> float:
    """Start a fresh log, or keep the lines up to `resume_step`; return the elapsed seconds kept."""
    if resume_step is None or not path.is_file():
        path.write_text("")
        return 0.0
    kept = []
    for entry in read_train_log(path):  # a line cut short by the kill is skipped
        if entry.get("step", 0) > resume_step:
            break
        kept.append(entry)
    write_jsonl(path, kept)  # atomic: a kill while cutting the log back leaves it whole
    return float(kept[-1].get("elapsed_s", 0.0)) if kept else 0.0


class CostCallback(TrainerCallback):
    """Measures the training loop: seconds, tokens, and peak memory (RSS on CPU, max allocated on CUDA).

    Peak RSS is the kernel's high-water mark, reset when training starts (so model loading does not count)
    where Linux allows it, else the process-lifetime peak.
    """

    def __init__(self) -> None:
        self.seconds = 0.0
        self.tokens = 0
        self.peak_bytes = 0
        self.peak_kind = "rss"
        self._start = 0.0
        self._tokens0 = 0

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.peak_kind = "cuda_max_allocated" if _on_cuda(args) else "rss"
        _reset_peak(self.peak_kind)
        self._tokens0 = state.num_input_tokens_seen
        self._start = time.perf_counter()

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.seconds = time.perf_counter() - self._start
        self.tokens = state.num_input_tokens_seen - self._tokens0
        self.peak_bytes = _read_peak(self.peak_kind)


def _on_cuda(args: Any) -> bool:
    return str(getattr(args, "device", "cpu")).startswith("cuda")


def _reset_peak(kind: str) -> None:
    if kind == "cuda_max_allocated":
        import torch

        torch.cuda.reset_peak_memory_stats()
        return
    with contextlib.suppress(OSError):  # Linux: writing 5 resets VmHWM, the peak resident set size
        Path("/proc/self/clear_refs").write_text("5")


def _read_peak(kind: str) -> int:
    if kind == "cuda_max_allocated":
        import torch

        return int(torch.cuda.max_memory_allocated())
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


class ProgressCallback(TrainerCallback):
    """A tqdm bar on a terminal; otherwise about `lines` plain log lines a run (and one per eval).

    Args:
        mode: `bar` or `lines`.
        lines: Plain progress lines per run (every max_steps / lines steps, and the last step).
    """

    def __init__(self, mode: str, lines: int = 20) -> None:
        self.mode = mode
        self.lines = lines
        self.every = 1
        self.bar: Any = None
        self.last_loss: float | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.every = max(1, state.max_steps // self.lines)
        if self.mode == "bar" and state.is_world_process_zero:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc="train", unit="step")

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        if not logs or not state.is_world_process_zero:
            return
        if "loss" in logs:
            self.last_loss = logs["loss"]
        if self.bar is not None:
            if self.last_loss is not None:
                self.bar.set_postfix(loss=f"{self.last_loss:.4f}", refresh=False)
            if "eval_loss" in logs:
                self.bar.write(f"step {state.global_step}: eval_loss {logs['eval_loss']:.4f}")
            return
        if self.mode != "lines":
            return
        if "eval_loss" in logs:
            progress_logger.info(
                "step %d/%d eval_loss %.4f", state.global_step, state.max_steps, logs["eval_loss"]
            )
        elif "loss" in logs and (state.global_step % self.every == 0 or state.global_step == state.max_steps):
            progress_logger.info(
                "step %d/%d loss %.4f lr %.3g tokens %d",
                state.global_step, state.max_steps, logs["loss"], logs.get("learning_rate", 0.0),
                state.num_input_tokens_seen,
            )  # fmt: skip

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class EvalAtEndCallback(TrainerCallback):
    """Asks for an evaluation after the last step, so a run with eval data always ends with an eval loss."""

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if state.global_step >= state.max_steps:
            control.should_evaluate = True
        return control


class CheckpointTidier(TrainerCallback):
    """Keeps checkpoints lean: no pickled `training_args.bin` (train_config.yaml records the run), and with
    `keep_optimizer_state="last"` no optimizer, scheduler or RNG state in any but the newest checkpoint.

    `--resume` only needs the newest; the model weights of every checkpoint stay for `deltarank spectrum`.
    """

    def __init__(self, keep_optimizer_state: str = "last") -> None:
        self.keep_optimizer_state = keep_optimizer_state

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            return
        newest = f"checkpoint-{state.global_step}"
        remove_training_args(Path(args.output_dir) / newest)
        if self.keep_optimizer_state != "last":
            return
        for folder in Path(args.output_dir).glob("checkpoint-*"):
            if folder.name == newest or not folder.is_dir():
                continue
            for path in [*(folder / n for n in OPTIMIZER_FILES), *folder.glob(RNG_GLOB)]:
                if path.is_file():
                    path.unlink()
            for shards in folder.glob("global_step*"):  # DeepSpeed's own optimizer shards
                if shards.is_dir():
                    shutil.rmtree(shards)


def remove_training_args(folder: Path) -> None:
    """Delete the pickled TrainingArguments that `Trainer` saves beside the weights (never read back)."""
    (folder / TRAINING_ARGS_FILE).unlink(missing_ok=True)
