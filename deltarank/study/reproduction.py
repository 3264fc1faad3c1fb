"""A study that is `deltarank reproduce`: its two runs `full` and `lora` are the reproduction's, so the study
also writes reproduce's summary.json (and its report as reproduce.md, beside the study's report.md).

A study file asks for it with `reproduce: quick` (or `long`); the quick preset does. The runs must be the ones
`reproduce` trains (`deltarank.reproduce.pipeline.train_stage`): same model, data (builtin:code or
builtin:math), seed, steps, batch, sequence length, checkpoint interval, and LoRA α = 2r; then the summary is
`reproduce`'s at the same seed, computed by reproduce's own stages.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from deltarank.errors import InputError
from deltarank.reproduce.config import LONG, QUICK, ReproduceConfig
from deltarank.train.config import TrainConfig

SCHEDULES = ("quick", "long")
REPORT_NAME = "reproduce.md"


def reproduce_config(
    runs: Mapping[str, TrainConfig], schedule: str, out_dir: Path, device: str = "auto"
) -> ReproduceConfig:
    """The ReproduceConfig whose training stage trains exactly the runs `full` and `lora` of a study (`runs`:
    every run's TrainConfig, by run name).

    Raises:
        InputError: no runs `full` and `lora`, or runs that differ from what reproduce trains (naming the key).
    """
    from deltarank.train.builtin_data import is_builtin, parse_builtin

    where = f"reproduce: {schedule}"
    if schedule not in SCHEDULES:
        raise InputError(where, f"must be one of {', '.join(SCHEDULES)}")
    if set(runs) < {"full", "lora"}:
        raise InputError(where, "needs two runs named full (method full) and lora (method lora)")
    full, lora = (runs[m].resolved() for m in ("full", "lora"))
    if (full.method, lora.method) != ("full", "lora"):
        raise InputError(where, "run full must have method full, run lora method lora")
    if not is_builtin(full.data) or parse_builtin(full.data).dataset not in ("code", "math"):
        raise InputError(where, f"reproduce trains on builtin:code or builtin:math, not {full.data}")
    plan = QUICK if schedule == "quick" else LONG
    config = ReproduceConfig(
        out_dir=out_dir,
        domain=parse_builtin(full.data).dataset,
        quick=schedule == "quick",
        device=device,
        model=full.model,
        lora_r=lora.lora_r,
        seed=full.seed,
        full_lr=float(full.lr or 0),
        lora_lr=float(lora.lr or 0),
        max_steps=None if full.max_steps == plan.max_steps else full.max_steps,
    )
    s = config.schedule
    expected = {
        "model": full.model,
        "data": full.data,
        "seed": full.seed,
        "max_steps": s.max_steps,
        "batch_size": s.batch_size,
        "seq_len": s.seq_len,
        "save_steps": s.save_steps,
        "lora_alpha": 2 * lora.lora_r,
    }
    for name, run in (("full", full), ("lora", lora)):
        for key, value in expected.items():
            if key == "lora_alpha" and name == "full":
                continue
            if getattr(run, key) != value:
                raise InputError(
                    where,
                    f"run {name}: {key} is {getattr(run, key)!r}; reproduce {schedule} trains with {value!r}",
                )
    return config


def write_reproduction(
    runs: Mapping[str, TrainConfig], schedule: str, out_dir: Path, device: str, echo: Callable[[str], None]
) -> dict[str, Any]:
    """reproduce's stages after training on the study's runs `full` and `lora`: summary.json, reproduce.md."""
    from deltarank.reproduce.pipeline import summarise

    config = reproduce_config(runs, schedule, out_dir, device)
    return summarise(config, {m: out_dir / m for m in ("full", "lora")}, echo, report_name=REPORT_NAME)
