"""When a run writes checkpoints, and what the first one settles.

Without `--save-steps`, `DefaultSaves` writes a checkpoint every 10% of the steps and at least every 10 minutes
(not at the last step: the final weights are written right after), keeping the last two, so that an interrupt
or a kill keeps work. A checkpoint waits until training since the last one took ten times as long as that save
did, so that saving costs at most about a tenth of the run (a full fine-tune of SmolLM2-135M writes 1.6 GB per
checkpoint: model and optimizer state). `--save-steps N` saves every N steps and keeps them all; `--save-steps 0`
saves none. A checkpoint changes nothing in training: the final weights are the same with or without them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from transformers import TrainerCallback

DEFAULT_SAVE_FRACTION = 0.1  # a checkpoint every 10% of the steps
DEFAULT_SAVE_MINUTES = 10  # and at least every 10 minutes
DEFAULT_KEEP = 2  # the newest two default checkpoints are kept
SAVE_COST_RATIO = 10.0  # training time between checkpoints, at least this many times the last save's time


class DefaultSaves(TrainerCallback):
    """Asks for a checkpoint once `fraction` of the run's steps passed since the last (and training since then
    took `cost_ratio` times the last save's time), or whenever `minutes` passed.

    Attributes:
        every: Steps between checkpoints, known once training begins.
    """

    def __init__(
        self,
        fraction: float = DEFAULT_SAVE_FRACTION,
        minutes: float = DEFAULT_SAVE_MINUTES,
        cost_ratio: float | None = None,
    ) -> None:
        self.fraction = fraction
        self.seconds = minutes * 60
        self.cost_ratio = SAVE_COST_RATIO if cost_ratio is None else cost_ratio
        self.every = 0
        self.last = time.monotonic()  # when the last save ended (or training began)
        self.last_step = 0
        self.asked = 0.0  # when the pending save was asked for
        self.save_seconds = 0.0  # how long the last save took

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.every = max(1, math.ceil(state.max_steps * self.fraction))
        self.last = time.monotonic()
        self.last_step = state.global_step  # a resumed run counts from its checkpoint

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        step = state.global_step
        if step >= state.max_steps:
            return control  # the final weights are saved next
        since = time.monotonic() - self.last
        due = step - self.last_step >= self.every and since >= self.cost_ratio * self.save_seconds
        if due or since >= self.seconds:
            control.should_save = True
            self.asked = time.monotonic()
        return control

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.last = time.monotonic()
        self.save_seconds = self.last - self.asked if self.asked else 0.0
        self.last_step = state.global_step

    def record(self) -> dict[str, Any]:
        """The interval as run.json records it."""
        return {
            "default": True,
            "steps": self.every,
            "minutes": self.seconds / 60,
            "keep": DEFAULT_KEEP,
            "cost_ratio": self.cost_ratio,
        }


class OnTrainBegin(TrainerCallback):
    """Runs `action` when training begins: after a resumed checkpoint has loaded (model, optimizer, state)."""

    def __init__(self, action: Callable[[], None]) -> None:
        self.action = action

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.is_world_process_zero:
            self.action()


class OnFirstSave(TrainerCallback):
    """Runs `action` once, after the first checkpoint is complete (the run has kept work)."""

    def __init__(self, action: Callable[[], None]) -> None:
        self.action: Callable[[], None] | None = action

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.action is not None and state.is_world_process_zero:
            action, self.action = self.action, None
            action()
