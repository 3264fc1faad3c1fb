"""`deltarank reproduce`: "LoRA Learns Less and Forgets Less" end to end, at small scale, in stages.

train full + LoRA (same data, tokens and seed) -> learning/forgetting of every checkpoint -> spectra of every
delta -> intruders and subspace similarity -> figures -> summary.json + report.md. Each stage leaves its
output on disk and is skipped when that output is already there, so a re-run (or a run after Ctrl-C)
continues where it stopped.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from deltarank.analysis.results import SpectrumResult
from deltarank.io.atomic import write_atomic
from deltarank.reproduce.config import METHODS, ReproduceConfig, checkpoints
from deltarank.reproduce.summary import build_summary, write_report

__all__ = ["METHODS", "ReproduceConfig", "checkpoints", "reproduce"]

log = logging.getLogger(__name__)
Echo = Callable[[str], None]


def reproduce(config: ReproduceConfig, echo: Echo = print) -> dict[str, Any]:
    """Run (or finish) every stage and return the summary written to `out_dir/summary.json`."""
    started = time.perf_counter()
    out = config.out_dir
    out.mkdir(parents=True, exist_ok=True)
    runs = {method: train_stage(config, method, echo) for method in METHODS}
    return summarise(config, runs, echo, started)


def summarise(
    config: ReproduceConfig,
    runs: dict[str, Path],
    echo: Echo = print,
    started: float | None = None,
    report_name: str = "report.md",
) -> dict[str, Any]:
    """Every stage after training, on trained `runs` (method -> run directory): evaluation, spectra, subspace,
    figures, summary.json and the report (`report_name` in out_dir). `deltarank study` calls it on the quick
    preset's two runs."""
    started = time.perf_counter() if started is None else started
    out = config.out_dir
    evaluation = evaluate_stage(config, runs, echo)
    spectra = spectrum_stage(config, runs, echo)
    subspace = subspace_stage(config, runs, echo) if config.subspace else {}

    summary = build_summary(config, runs, evaluation, spectra, subspace)
    figures_stage(config, spectra, summary, echo)
    summary["elapsed_s"] = round(time.perf_counter() - started, 1)
    write_atomic(out / "summary.json", json.dumps(summary, indent=1))
    write_report(out / report_name, summary)
    echo(f"Wrote {out / 'summary.json'}, {out / report_name} and {out / 'figures'}/")
    return summary


def train_stage(config: ReproduceConfig, method: str, echo: Echo) -> Path:
    """Train one method unless its run.json exists; resumes from a checkpoint a stopped run left."""
    from deltarank.train.config import TrainConfig
    from deltarank.train.trainer import run_training

    run_dir = config.out_dir / method
    if (run_dir / "run.json").is_file():
        echo(f"[train {method}] done already, skipping")
        return run_dir
    resume = any(run_dir.glob("checkpoint-*"))
    if run_dir.exists() and not resume:
        shutil.rmtree(run_dir)
    s = config.schedule
    train_config = TrainConfig(
        model=config.model,
        data=f"builtin:{config.domain}",
        method=method,
        output_dir=str(run_dir),
        max_steps=s.max_steps,
        batch_size=s.batch_size,
        seq_len=s.seq_len,
        save_steps=s.save_steps,
        lr=config.full_lr if method == "full" else config.lora_lr,
        lora_r=config.lora_r,
        lora_alpha=2 * config.lora_r,
        seed=config.seed,
        device=config.device,
        resume=resume,
    )
    echo(f"[train {method}] {s.max_steps} steps of {s.batch_size} × {s.seq_len} tokens, lr {train_config.lr}")
    run_training(train_config)
    return run_dir


def evaluate_stage(config: ReproduceConfig, runs: dict[str, Path], echo: Echo) -> dict[str, dict[str, float]]:
    """Target-domain and general-text loss (and math accuracy) of the base and every checkpoint, cached."""
    from deltarank.evaluation.accuracy import math_accuracy
    from deltarank.evaluation.drift import GENERAL_TEXT, general_text, read_general_text, write_general_text
    from deltarank.evaluation.loss import encode_chats, sequence_loss
    from deltarank.evaluation.models import EvalModels
    from deltarank.train.builtin_data import held_out_examples
    from deltarank.train.data import build_dataset
    from deltarank.train.models import load_tokenizer, resolve_model

    cache_path = config.out_dir / "evaluation.json"
    cache: dict[str, dict[str, float]] = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
    s = config.schedule
    source = resolve_model(config.model)
    tokenizer = load_tokenizer(source)
    target_set, _ = build_dataset(f"builtin:{config.domain}:test", tokenizer, s.seq_len, s.eval_sequences)
    target = [(target_set[i]["input_ids"], target_set[i]["labels"]) for i in range(len(target_set))]
    loader = EvalModels(source)
    general_path = config.out_dir / GENERAL_TEXT
    if not general_path.is_file():
        echo("[evaluate] sampling the base model's own general text (the forgetting set)")
        write_general_text(
            general_path, general_text(loader.base(), tokenizer, s.general_tokens, config.seed)
        )
    general = encode_chats(tokenizer, read_general_text(general_path), s.seq_len)
    math = held_out_examples("math", s.math_examples) if config.domain == "math" else []
    pad = tokenizer.pad_token_id or 0
    models: list[tuple[str, Path | None]] = [("base", None)]
    models += [(f"{m}@{step}", path) for m in METHODS for step, path in checkpoints(runs[m])]
    for key, path in models:
        if key in cache:
            continue
        echo(f"[evaluate] {key}")
        final = key == "base" or path == runs.get(key.split("@")[0])

        def measure(model: Any, final: bool = final) -> dict[str, float]:
            metrics = {
                "target_loss": sequence_loss(model, target, pad),
                "general_loss": sequence_loss(model, general, pad),
            }
            if math and final:
                metrics["math_accuracy"] = math_accuracy(model, tokenizer, math, s.math_tokens)["accuracy"]
            return metrics

        cache[key] = loader.evaluate(path, measure)
        write_atomic(cache_path, json.dumps(cache, indent=1))
    return cache


def spectrum_stage(
    config: ReproduceConfig, runs: dict[str, Path], echo: Echo
) -> dict[str, list[SpectrumResult]]:
    """Spectra of every checkpoint's delta against the base (one pass over the base per method)."""
    from deltarank.analysis.engine import spectrum_many
    from deltarank.train.models import resolve_model

    source = resolve_model(config.model)
    base = Path(source.directory) / source.gguf_file if source.gguf_file else Path(source.directory)
    spectra_dir = config.out_dir / "spectra"
    spectra_dir.mkdir(exist_ok=True)
    results: dict[str, list[SpectrumResult]] = {}
    for method in METHODS:
        steps = checkpoints(runs[method])
        paths = [spectra_dir / f"{method}-step{step}.json" for step, _ in steps]
        if all(p.is_file() for p in paths):
            echo(f"[spectrum {method}] done already, skipping")
            results[method] = [SpectrumResult.from_json(p) for p in paths]
            continue
        echo(f"[spectrum {method}] {len(steps)} checkpoints against {base.name}")
        found = spectrum_many(base, [str(path) for _, path in steps], device=config.device)
        for result, path in zip(found, paths, strict=True):
            result.to_json(path)
        shutil.copyfile(paths[-1], spectra_dir / f"{method}.json")
        results[method] = found
    return results


def subspace_stage(config: ReproduceConfig, runs: dict[str, Path], echo: Echo) -> dict[str, Any]:
    """Intruder dimensions of both final models and φ between the full and LoRA deltas."""
    from deltarank.analysis.tools.intruders import intruders
    from deltarank.analysis.tools.similarity import similarity
    from deltarank.train.models import resolve_model

    path = config.out_dir / "subspace.json"
    if path.is_file():
        echo("[subspace] done already, skipping")
        return dict(json.loads(path.read_text()))
    source = resolve_model(config.model)
    base = Path(source.directory) / source.gguf_file if source.gguf_file else Path(source.directory)
    echo("[subspace] intruder dimensions and full-vs-LoRA subspace similarity")
    found: dict[str, Any] = {}
    for method in METHODS:
        result = intruders(base, runs[method], device=config.device)
        result.to_json(config.out_dir / f"intruders-{method}.json")
        found[f"intruders_{method}"] = str(config.out_dir / f"intruders-{method}.json")
    sim = similarity(base, runs["full"], runs["lora"], device=config.device)
    sim.to_json(config.out_dir / "similarity.json")
    found["similarity"] = str(config.out_dir / "similarity.json")
    write_atomic(path, json.dumps(found, indent=1))
    return found


def figures_stage(
    config: ReproduceConfig, spectra: dict[str, list[SpectrumResult]], summary: dict[str, Any], echo: Echo
) -> None:
    """The paper figures from the result files (regenerated every time: they take seconds)."""
    from deltarank.figures.render import render_figures

    results = [*spectra["full"], *spectra["lora"]]
    written = render_figures(results, config.out_dir / "figures", summary=summary, formats=("pdf", "png"))
    echo(f"[figures] {len(written)} files")
