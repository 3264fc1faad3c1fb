"""`deltarank reproduce` is the study preset `quick`: what its options change in the preset, and what a study
that is a reproduction must hold.

A study file asks for the reproduction's outputs with `reproduce: quick` (or `long`): its runs `full`
(method full) and `lora` (method lora) on `builtin:code` or `builtin:math` are the two runs of "LoRA Learns Less
and Forgets Less", and the study also writes summary.json (`deltarank.study.report.summary`, a view of
study.json), the reproduction's section of report.md and its figures. Nothing is measured twice: the study's
own measurements (`evaluate: {checkpoints: true, intruders: true, similarity: [[full, lora]]}` in the preset)
are all the summary reads.
"""

from __future__ import annotations

from collections.abc import Mapping

from deltarank.errors import InputError
from deltarank.train.config import TrainConfig

SCHEDULES = ("quick", "long")
RUNS = ("full", "lora")
DOMAINS = ("code", "math")


def check_reproduction(runs: Mapping[str, TrainConfig], schedule: str) -> str:
    """Check that a study with `reproduce: <schedule>` has the runs a reproduction compares; returns its
    domain (`code` or `math`).

    Raises:
        InputError: an unknown schedule, no runs `full` and `lora`, other methods, or data other than
            builtin:code or builtin:math, or runs on different data or models.
    """
    from deltarank.train.builtin_data import is_builtin, parse_builtin

    where = f"reproduce: {schedule}"
    if schedule not in SCHEDULES:
        raise InputError(where, f"must be one of {', '.join(SCHEDULES)}")
    if not set(RUNS) <= set(runs):
        raise InputError(where, "needs two runs named full (method full) and lora (method lora)")
    full, lora = (runs[m].resolved() for m in RUNS)
    if (full.method, lora.method) != RUNS:
        raise InputError(where, "run full must have method full, run lora method lora")
    if not is_builtin(full.data) or parse_builtin(full.data).dataset not in DOMAINS:
        raise InputError(where, f"a reproduction trains on builtin:code or builtin:math, not {full.data}")
    for key in ("data", "model", "seed", "max_steps", "batch_size", "seq_len"):
        if getattr(full, key) != getattr(lora, key):
            raise InputError(where, f"runs full and lora differ in {key}: they must train alike")
    return parse_builtin(full.data).dataset
