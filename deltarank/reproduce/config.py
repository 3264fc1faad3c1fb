"""What one reproduction is: its methods, its schedule (quick or long) and where its runs leave checkpoints."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

from deltarank.io.model_ref import read_run_record

METHODS = ("full", "lora")


@dataclass(frozen=True)
class Schedule:
    """Sizes of one reproduction (quick: minutes on 2 CPU cores; long: what a GPU makes short)."""

    max_steps: int
    batch_size: int
    seq_len: int
    save_steps: int
    eval_sequences: int
    general_tokens: int
    math_examples: int
    math_tokens: int


SMOKE_EVAL = 8
SMOKE_TOKENS = 16
QUICK = Schedule(60, 4, 128, 20, 32, 64, 24, 40)
LONG = Schedule(1000, 8, 512, 200, 256, 256, 200, 96)


@dataclass(frozen=True)
class ReproduceConfig:
    """One reproduction run."""

    out_dir: Path
    domain: str = "code"
    quick: bool = True
    device: str = "auto"
    model: str = "smollm2-135m"
    lora_r: int = 16
    seed: int = 0
    full_lr: float = 5e-5  # the reference paper's code-IFT full-FT lr; LoRA at 10×
    lora_lr: float = 5e-4
    max_steps: int | None = None  # overrides the schedule's steps (smoke runs, tests)
    subspace: bool = True  # intruder dimensions and full-vs-LoRA subspace similarity

    @property
    def schedule(self) -> Schedule:
        """QUICK or LONG, with `max_steps` (and a save interval that still gives checkpoints) applied."""
        plan = QUICK if self.quick else LONG
        if self.max_steps is None:
            return plan
        smoke = replace(plan, max_steps=self.max_steps, save_steps=max(1, self.max_steps // 3))
        if self.max_steps >= plan.max_steps:
            return smoke
        # A shortened run (smoke test) also measures on fewer sequences and shorter general text.
        return replace(
            smoke, eval_sequences=min(plan.eval_sequences, SMOKE_EVAL), general_tokens=SMOKE_TOKENS
        )


def checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """(step, directory) of the intermediate checkpoints and the final weights, by step."""
    found = []
    for path in run_dir.glob("checkpoint-*"):
        if m := re.fullmatch(r"checkpoint-(\d+)", path.name):
            found.append((int(m.group(1)), path))
    run = read_run_record(run_dir)
    final_step = int(run.get("steps", run.get("global_step", max((s for s, _ in found), default=0))))
    found = [(s, p) for s, p in found if s != final_step]
    return [*sorted(found), (final_step, run_dir)]
