"""`deltarank study --dry-run`'s plan: each run's steps, tokens and state in the study directory, and the
training and evaluation time left.

Nothing is trained, measured or written. Training time is estimated from the median tokens/s of the study's
finished runs (run.json), else from a 2-core CPU figure per model; evaluation time from the median wall seconds
of the study's measured runs (measurement.json), unknown until a run of the same base model is measured.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

from deltarank.errors import InputError
from deltarank.io.model_ref import read_run_record
from deltarank.study.design.recommend_spec import written
from deltarank.study.design.study import RunSpec, Study
from deltarank.study.measure.measurement_file import saved_measurement
from deltarank.study.run.run_state import RunStatus, run_status
from deltarank.train.replay import replay_count

# Training throughput assumed by --dry-run before a run of the study has finished (tokens/s on 2 CPU cores):
# SmolLM2-135M measured by `make demo` (README: 137 full, 152 LoRA; 140 taken for both); Gemma 3 270M is not
# measured: the SmolLM2 figure halved for twice the parameters. Other models: the SmolLM2 figure.
DEFAULT_TOKENS_PER_SECOND = {"smollm2-135m": 140.0, "gemma3-270m": 70.0}
FALLBACK_TOKENS_PER_SECOND = 140.0


def plan(study: Study, out_dir: Path) -> list[dict[str, Any]]:
    """What `--dry-run` shows: each run's name, coordinates, steps, tokens, state, the estimated training seconds
    left and the estimated evaluation seconds left (None until a run of the same base model is measured)."""
    rates = measured_rates(study, out_dir)
    evaluation = measured_evaluation(study, out_dir)
    planned = []
    for run in study.runs:
        status = run_status(study, run, out_dir) if out_dir.is_dir() else RunStatus("pending")
        steps = planned_steps(run)
        config = run.train_config(Path("run"))
        tokens = None if steps is None else steps * config.batch_size * config.grad_accum * config.seq_len
        rate = rates.get(study.root_model(run)) or DEFAULT_TOKENS_PER_SECOND.get(
            study.root_model(run), FALLBACK_TOKENS_PER_SECOND
        )
        left = tokens
        if status.state in ("done", "measure"):
            left = 0
        elif tokens is not None and steps and status.step:
            left = tokens * max(0, steps - status.step) // steps
        planned.append(
            {
                "name": run.name,
                "coordinates": run.coordinates,
                "from": run.parent,
                "recommend": None if run.recommend is None else written(run.recommend),
                "steps": steps,
                "tokens": tokens,
                "state": status.state if status.state != "resume" else f"resume@{status.step}",
                "seconds": None if left is None else left / rate,
                "tokens_per_second": rate,
                "evaluation_seconds": 0.0
                if status.state == "done"
                else evaluation.get(study.root_model(run)),
            }
        )
    return planned


def planned_steps(run: RunSpec) -> int | None:
    """Optimizer steps of a run: max_steps, or epochs over data_size examples and the replay ones mixed in
    (`deltarank.train.replay`; None when the data's size is unknown before reading it)."""
    config = run.train_config(Path("run")).resolved()
    if config.max_steps is not None:
        return config.max_steps
    if config.max_examples is None or config.epochs is None:
        return None
    per_step = config.batch_size * config.grad_accum
    examples = config.max_examples + replay_count(config.max_examples, config.replay_fraction)
    return math.ceil(math.ceil(examples / per_step) * config.epochs)


def measured_evaluation(study: Study, out_dir: Path) -> dict[str, float]:
    """Median wall seconds of the measurements of this study's measured runs (this `evaluate:`), per base
    model: the evaluation time `--dry-run` expects of each run still to measure."""
    found: dict[str, list[float]] = {}
    for run in study.runs:
        saved = saved_measurement(out_dir / run.name, study.evaluate.for_run(run.name))
        if saved is not None and saved.get("seconds"):
            found.setdefault(study.root_model(run), []).append(float(saved["seconds"]))
    return {model: statistics.median(values) for model, values in found.items()}


def measured_rates(study: Study, out_dir: Path) -> dict[str, float]:
    """Median training tokens/s of this study's finished runs, per base model."""
    found: dict[str, list[float]] = {}
    for run in study.runs:
        try:
            rate = read_run_record(out_dir / run.name).get("tokens_per_second")
        except InputError:  # not finished
            continue
        if rate:
            found.setdefault(study.root_model(run), []).append(float(rate))
    return {model: statistics.median(values) for model, values in found.items()}
