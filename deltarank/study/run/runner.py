"""`run_study`: train every run of a study, measure it, and write study.json, study.csv, figures and report.md.

The study directory is the study's working state:

    DIR/study.yaml                 the resolved study (a rerun of the same study continues it)
    DIR/base/<model>--<data>/      the base model measured on each training set (measurement.json,
                                   general_text.jsonl, generations.jsonl)
    DIR/<run>/                     `deltarank train`'s output + measurement.json (+ generations.jsonl)
    DIR/study.json, study.csv, report.md, figures/

This module holds the executors' two tasks (`measure_base_task`, `run_task`), each run's state (`run_status`)
and study.json's rows (each run's state is `deltarank.study.run.run_state`); the measurement.json files and the base pairs live in `deltarank.study.measure.measurement_file`,
study.yaml in `deltarank.study.run.directory`, `--dry-run`'s plan in `deltarank.study.run.planning`.

A finished run (run.json and a measurement.json of the current `evaluate:`) is skipped; a run stopped during
training resumes from its last complete checkpoint (`train --resume`); a measurement is redone when
`evaluate:` changed. study.json, study.csv, the figures and the report are rebuilt from the per-run files every
time. Runs are tasks of the chosen executor (`deltarank.study.run.executors`), in waves: base measurements, runs
without a parent, then the runs stacked on them.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from deltarank.errors import DeltarankError
from deltarank.io.run_directory import RunDirectory
from deltarank.io.training_methods import where
from deltarank.study.design.checks import check_study_inputs
from deltarank.study.design.coverage import not_measured, not_measured_line
from deltarank.study.design.held_out_split import evaluate_for, split_records, training_data, write_splits
from deltarank.study.design.study import RunSpec, Study, run_model
from deltarank.study.design.study_file import parse_study
from deltarank.study.measure.measurement_file import (
    BASE_DIR,
    base_cached,
    base_key,
    base_measurements,
    base_pairs,
    cached_measurement,
    write_measurement,
)
from deltarank.study.measure.run_measures import measure_base, measure_run
from deltarank.study.report.figures import FIGURES_DIR
from deltarank.study.report.study_json import study_document, write_study
from deltarank.study.run.console import RunCounter
from deltarank.study.run.directory import STUDY_YAML, prepare_study_dir
from deltarank.study.run.executors import Executor, SequentialExecutor, Task
from deltarank.study.run.recommendation import ensure_recommendation, recommendation_row
from deltarank.study.run.run_state import run_status

log = logging.getLogger(__name__)
Echo = Callable[[str], None]

REPORT = "report.md"
SETTINGS = (
    "method",
    "model",
    "data",
    "max_examples",
    "lr",
    "lora_r",
    "lora_alpha",
    "target_modules",
    "max_steps",
    "epochs",
    "batch_size",
    "grad_accum",
    "seq_len",
    "weight_decay",
    "weight_decay_mode",
    "attention_dropout",
    "seed",
)
LORA_METHODS = where("lora_like")  # lora, qlora: the runs whose settings keep LoRA r and α


def run_study(
    study: Study,
    out_dir: Path,
    device: str = "auto",
    force: bool = False,
    executor: Executor | None = None,
    echo: Echo = print,
    callbacks: Sequence[Any] = (),
    check: bool = True,
) -> dict[str, Any]:
    """Run (or continue) a study in `out_dir` and return the study.json document.

    `callbacks` are extra `transformers.TrainerCallback`s for every training run, in this process only (the
    default executor; tests use one to stop a run). `check=False` skips `check_study_inputs` for a caller that
    has just run it (the command line, before preparing the directory).

    Raises:
        InputError: a missing or malformed model, data file or `evaluate:` set (checked before anything is
            written: `deltarank.study.design.checks`).
        OutputError: `out_dir` is, contains or lies inside an input, or holds another study (or other files)
            and `force` is not given.
        DeltarankError: a run or measurement failed (finished runs stay for the next attempt).
    """
    started = time.perf_counter()
    if check:
        check_study_inputs(study)
    prepare_study_dir(study, out_dir, force)
    write_splits(study, out_dir)
    missing = not_measured_line(not_measured(study))
    if missing:
        echo(missing)
    runner = executor or SequentialExecutor()
    resolved = study.resolved
    pairs = base_pairs(study)
    todo = [key for key in pairs if not base_cached(study, out_dir, key)]
    for number, key in enumerate(todo, start=1):
        echo(f"base {number}/{len(todo)} {key}: measuring the base model")
    runner.run_wave([(measure_base_task, (resolved, key, str(out_dir), device)) for key in todo])
    counter = RunCounter(len(study.runs))
    left = sum(run_status(study, run, out_dir).state != "done" for run in study.runs)
    extra = (tuple(callbacks),) if callbacks else ()
    one_by_one = isinstance(runner, SequentialExecutor)
    for wave in study.levels():
        pending: list[Task] = []
        for run in wave:
            status = run_status(study, run, out_dir)
            if status.state == "done":
                echo(counter.line(run.name, "done already, skipping", 0))
                continue
            verb = {"measure": "measuring", "resume": f"resuming from step {status.step}"}.get(
                status.state, "training"
            )
            task = (run_task, (resolved, run.name, str(out_dir), device, *extra))
            if one_by_one:  # a line as each run starts, with the time left from the runs finished
                echo(counter.line(run.name, verb, left))
                counter.start()
                runner.run_wave([task])
                counter.finished(1)
                left -= 1
            else:
                echo(counter.line(run.name, verb, left - len(pending)))
                pending.append(task)
        if pending:
            counter.start()
            runner.run_wave(pending)
            counter.finished(len(pending))
            left -= len(pending)
    from deltarank.study.measure.subspace import measure_subspace

    measure_subspace(study, out_dir, device, echo)
    return write_outputs(study, out_dir, echo, elapsed_s=time.perf_counter() - started)


def write_outputs(
    study: Study, out_dir: Path, echo: Echo = print, elapsed_s: float | None = None
) -> dict[str, Any]:
    """study.json, study.csv, the figures and report.md, from the per-run files; for a reproduction
    (`reproduce:`) also summary.json and its figures (`elapsed_s`: the summary's running time)."""
    from deltarank.figures.study import render_study_figures
    from deltarank.study.measure.subspace import subspace_section
    from deltarank.study.report.figures import render_run_figures
    from deltarank.study.report.markdown import write_report
    from deltarank.study.report.summary import SUMMARY_JSON, build_summary, write_summary

    document = study_document(
        study_header(study, out_dir),
        base_measurements(study, out_dir),
        rows(study, out_dir),
        subspace_section(study, out_dir),
    )
    json_path, csv_path = write_study(document, out_dir)
    figures = render_study_figures(document, out_dir / FIGURES_DIR)
    summary = None
    written = [str(json_path), str(csv_path)]
    if study.resolved.get("reproduce"):
        summary = build_summary(document, out_dir, elapsed_s)
        write_summary(out_dir / SUMMARY_JSON, summary)
        written.append(str(out_dir / SUMMARY_JSON))
    figures += render_run_figures(document, out_dir, out_dir / FIGURES_DIR, summary)
    write_report(document, out_dir / REPORT, summary)
    echo(
        f"Wrote {', '.join(written)}, {out_dir / REPORT} and {len(figures)} figures in {out_dir / FIGURES_DIR}/"
    )
    return document


def study_header(study: Study, out_dir: Path) -> dict[str, Any]:
    """study.json's `study`: name, description, fingerprint, the resolved file, the held-out splits made from
    training files (`deltarank.study.design.held_out_split`) and what is not measured (`deltarank.study.design.coverage`)."""
    return {
        "name": study.name,
        "description": study.description,
        "fingerprint": study.fingerprint,
        "file": study.resolved,
        "held_out_splits": split_records(study, out_dir),
        "not_measured": not_measured(study),
    }


# -------------------------------------------------------------------------------- tasks: base models and runs


def base_seed(study: Study) -> int:
    """The seed of the base model's samples (general text, diversity): base: seed, else 0 (as reproduce)."""
    return int(study.resolved["base"].get("seed", 0))


def measure_base_task(resolved: Mapping[str, Any], key: str, out_dir: str, device: str) -> dict[str, Any]:
    """A task: measure the base model of one (model, data) pair into DIR/base/<key>/measurement.json."""
    folder = Path(out_dir)
    study = parse_study(resolved, folder / STUDY_YAML)
    model, data = base_pairs(study)[key]
    work_dir = folder / BASE_DIR / key
    cached = cached_measurement(work_dir, study.evaluate.for_run(None))
    if cached is not None:
        return cached
    started = time.perf_counter()
    spec = evaluate_for(study, data, folder).for_run(None)
    result = measure_base(model, data, spec, work_dir, seed=base_seed(study), device=device)
    write_measurement(work_dir, study.evaluate.for_run(None), result, time.perf_counter() - started)
    return result


def run_task(
    resolved: Mapping[str, Any], name: str, out_dir: str, device: str, callbacks: Sequence[Any] = ()
) -> dict[str, Any]:
    """A task: train one run (resuming a stopped one) and measure it into DIR/<run>/measurement.json."""
    folder = Path(out_dir)
    study = parse_study(resolved, folder / STUDY_YAML)
    run = study.run(name)
    run_dir = folder / run.name
    status = run_status(study, run, folder)
    if status.state in ("resume", "pending"):
        train_run(study, run, folder, device, resume=status.state == "resume", callbacks=callbacks)
    cached = cached_measurement(run_dir, study.evaluate.for_run(run.name))
    if cached is not None:
        return cached
    key = base_key(study.root_model(run), str(run.config["data"]))
    base_dir = folder / BASE_DIR / key
    base = cached_measurement(base_dir, study.evaluate.for_run(None))
    if base is None:
        raise DeltarankError(f"{base_dir}: the base model has not been measured")
    seed = int(run.train_config(run_dir).seed)
    data = str(run.config["data"])
    spec = evaluate_for(study, data, folder).for_run(run.name)
    started = time.perf_counter()
    result = measure_run(run_dir, run_model(run, folder), data, spec, base, base_dir, seed, device)
    write_measurement(run_dir, study.evaluate.for_run(run.name), result, time.perf_counter() - started)
    return result


def train_run(
    study: Study, run: RunSpec, out_dir: Path, device: str, resume: bool, callbacks: Sequence[Any] = ()
) -> None:
    """Train one run into DIR/<run>/ (a fresh start removes what a run stopped before its first checkpoint
    left, or a run directory of other settings) on its data, or on its held-out split's train part."""
    from deltarank.train.trainer import run_training

    run_dir = out_dir / run.name
    if run_dir.exists() and not resume:
        shutil.rmtree(run_dir)
    if run.parent is not None and not RunDirectory(out_dir / run.parent).finished():
        raise DeltarankError(f"run {run.name}: its parent {run.parent} has not finished")
    # a recommend: run's LoRA keys are its recommendation's (computed once, kept in DIR/recommendations/)
    recommended = ensure_recommendation(study, run, out_dir, device) if run.recommend is not None else {}
    data = training_data(study, str(run.config["data"]), out_dir)
    config = run.train_config(
        run_dir, model=run_model(run, out_dir), device=device, resume=resume, data=data, **recommended
    )
    run_training(config, callbacks)


def rows(study: Study, out_dir: Path) -> list[dict[str, Any]]:
    """study.json's rows: every run's coordinates, settings and measurements (each must be measured), and how
    far its r0.9 sits above its nulls (`deltarank.study.measure.nulls`)."""
    from deltarank.study.measure.nulls import run_nulls

    found = []
    for run in study.runs:
        result = cached_measurement(out_dir / run.name, study.evaluate.for_run(run.name))
        if result is None:
            raise DeltarankError(f"{out_dir / run.name}: not trained and measured yet")
        row: dict[str, Any] = {"name": run.name, "coordinates": run.coordinates, "from": run.parent}
        row.update(result)
        row["settings"] = settings(study, run)
        recommendation = recommendation_row(out_dir, run)
        if recommendation is not None:  # the LoRA r and α it trained with: its recommendation's
            row["recommendation"] = recommendation
            row["settings"].update(
                lora_r=recommendation["lora_r"],
                lora_alpha=recommendation["lora_alpha"],
                target_modules=f"recommended ({recommendation['modules']} modules)",
            )
        row["base"] = base_key(study.root_model(run), str(run.config["data"]))
        found.append(row)
    nulls = run_nulls(study, out_dir, found)
    for row in found:
        row["nulls"] = nulls[row["name"]]
    return found


def settings(study: Study, run: RunSpec) -> dict[str, Any]:
    """The training settings a reader compares runs by (data_size for max_examples; LoRA r and α for LoRA)."""
    resolved = run.train_config(Path("run")).resolved().to_dict()
    values = {("data_size" if k == "max_examples" else k): resolved[k] for k in SETTINGS}
    values["model"] = study.root_model(run)
    if resolved["method"] not in LORA_METHODS:
        values["lora_r"] = values["lora_alpha"] = None
    return values
