"""The price of each fine-tuning method on SmolLM2-135M: cost, learning, forgetting and the rank of ΔW.

Every method trains on `builtin:code` with the same token budget (the same steps × batch × seq_len), its
default learning rate and seed 0, each in its own `deltarank train` process (so run.json's peak memory is that
method's alone). Then, in this process, each run is measured the way `deltarank reproduce` measures:

- learning: mean per-token loss on the held-out `builtin:code:test` sequences (the same ones for every run);
- forgetting: the rise of the loss on the base model's own samples (T = 1, untruncated) to general prompts
  (sampled once, cached): the estimate of KL(base ‖ tuned) per token (`deltarank.evaluation.drift`);
- for the methods that change weights, the spectrum of ΔW (`deltarank.analysis.engine.spectrum`): the median
  energy_90 per module type against the method's structural rank bound. Prompt methods and bottleneck
  adapters add computation instead of changing a weight: they have no ΔW;
- what kind of change ΔW is: its sparsity profile (the share of entries changed by more than 1e-5, the share
  the base's storage dtype would round away, numerical rank ÷ min(m, n); every spectrum records it) and its
  placement among W₀'s singular directions (`deltarank.analysis.tools.placement`: the share of ‖ΔW‖² in W₀'s
  top-k and bottom-k directions at k = ΔW's r₀.₉, against the chance share k/d, and the change of W₀'s σ₁).

Each method's numbers are kept in `benchmarks/results/methods/<method>.json`; a rerun skips the methods found
there (delete a file to measure that method again), and the table and figure are drawn from those files.

    python benchmarks/methods.py [--methods full,lora,...] [--steps 20] [--batch-size 4] [--seq-len 128]
        [--threads 1]
        [--results benchmarks/results] [--work benchmarks/out/methods] [--report-only]

Writes `methods.md` and `methods_rank_vs_params.png` under --results.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from methods_report import write_report
from train_overhead import fp32_model_dir

from deltarank.io.atomic import write_atomic
from deltarank.io.training_methods import LORA_INITS, REGISTRY

HERE = Path(__file__).resolve().parent
DATA, TEST_DATA, MODEL, SEED = "builtin:code", "builtin:code:test", "smollm2-135m", 0
# reproduce --quick's held-out set, general-text length and samples per general prompt
EVAL_SEQUENCES, GENERAL_TOKENS, GENERAL_SAMPLES = 32, 64, 4
# LoRA's variants, measured after it: rsLoRA and DoRA are switches of lora, and its initialisations
# (`--lora-init`; pissa_niter_K as pissa_niter_4, loftq left out: refused without CUDA).
LORA_INIT_VARIANTS = {
    f"lora-{init}": ["--lora-init", init]
    for init in (i.replace("pissa_niter_K", "pissa_niter_4") for i in LORA_INITS)
    if init not in ("default", "loftq")
}
VARIANTS = {"lora": {"rslora": ["--rslora"], "dora": ["--dora"], **LORA_INIT_VARIANTS}}
# method name -> `deltarank train` arguments: every method of the registry, in its order, and the variants.
METHODS: dict[str, list[str]] = {
    name: ["--method", method, *switches]
    for method in REGISTRY
    for name, switches in {method: [], **VARIANTS.get(method, {})}.items()
}
NO_DELTA = {m.name for m in REGISTRY.values() if not m.has_delta}  # prompt methods, adapter
RUN_KEYS = (
    "parameters",
    "stored_bytes",
    "tokens_seen",
    "steps",
    "wall_seconds",
    "train_seconds",
    "tokens_per_second",
    "peak_memory_bytes",
    "peak_memory_kind",
    "config",
    "batching",
)


def train(method: str, model: str, run_dir: Path, budget: argparse.Namespace) -> dict[str, Any]:
    """Train one method in its own `deltarank train` process; returns the parts of its run.json kept."""
    command = [sys.executable, "-m", "deltarank", "train", "--model", model, "--data", DATA]
    command += [*METHODS[method], "-o", str(run_dir), "--force", "--seed", str(SEED)]
    command += ["--max-steps", str(budget.steps), "--batch-size", str(budget.batch_size)]
    command += ["--seq-len", str(budget.seq_len)]
    log = run_dir.parent / f"{method}.train.log"
    with log.open("w") as out:
        done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-5:]
        raise RuntimeError(f"{method}: deltarank train exited {done.returncode}: {' | '.join(tail)}")
    record = json.loads((run_dir / "run.json").read_text())
    return {"command": command[2:], **{k: record.get(k) for k in RUN_KEYS}}


class Evaluator:
    """Held-out code loss and general-text loss of a model, on sequences built once for every run."""

    def __init__(self, work: Path, seq_len: int) -> None:
        from deltarank.evaluation.drift import (
            current_general_text,
            general_text,
            scored_examples,
            write_general_text,
        )
        from deltarank.train.data import build_dataset
        from deltarank.train.models import load_model, load_tokenizer, resolve_model

        self.source = resolve_model(MODEL)
        tokenizer = load_tokenizer(self.source)
        self.pad = tokenizer.pad_token_id or 0
        target, _ = build_dataset(TEST_DATA, tokenizer, seq_len, EVAL_SEQUENCES)
        self.target = [(target[i]["input_ids"], target[i]["labels"]) for i in range(len(target))]
        general_path = work / "general_text.jsonl"
        records = current_general_text(general_path, GENERAL_TOKENS, GENERAL_SAMPLES, SEED)
        if records is None:  # missing, or drawn otherwise (an older cache): sampled again
            import torch

            from deltarank.evaluation.models import ready_for_evaluation

            base = ready_for_evaluation(load_model(self.source), torch.device("cpu"))
            records = general_text(base, tokenizer, GENERAL_TOKENS, SEED, GENERAL_SAMPLES)
            write_general_text(general_path, records)
        self.general = scored_examples(records)  # the sampled token ids, whole

    def losses(self, model: Any) -> dict[str, float]:
        """target_loss (held-out code) and general_loss (the base model's own general text)."""
        from deltarank.evaluation.loss import sequence_loss

        return {
            "target_loss": sequence_loss(model, self.target, self.pad),
            "general_loss": sequence_loss(model, self.general, self.pad),
        }


def tuned_model(method: str, run_dir: Path, qlora_base: Path) -> Any:
    """The trained model as it runs: full weights, the base + its adapter (qlora: on the 4-bit base)."""
    from deltarank.train.models import load_trained, resolve_model

    return load_trained(resolve_model(qlora_base if method == "qlora" else MODEL), run_dir).eval()


def delta_spectrum(method: str, run_dir: Path, qlora_base: Path, work: Path) -> dict[str, Any]:
    """Median energy_90 and structural rank bound of ΔW per module type (and over all matrices)."""
    from deltarank.analysis.engine import spectrum
    from deltarank.analysis.results.medians import median, module_medians, rank_of
    from deltarank.analysis.results.rank_statistics import SPARSITY_MEASURES, module_rank_statistics

    result = spectrum(base_weights(method, qlora_base), run_dir)
    result.to_json(work / f"{method}.spectrum.json")
    # the adapter's own ΔW; qlora's spectrum adds records of other kinds (module "q_proj:quantization_error"
    # for the 4-bit rounding of the base, "q_proj:qlora_total" for both), summarised apart
    matrices = [m for m in result.matrices if ":" not in m.module]
    others: dict[str, list[Any]] = {}
    for m in result.matrices:
        if ":" in m.module:
            others.setdefault(m.kind, []).append(m)

    def bound(m: Any) -> float:
        return float(m.rank_bound if m.rank_bound is not None else min(m.shape))

    energy = rank_of("energy_90")
    statistics = module_rank_statistics(result)
    return {
        "kind": sorted({m.kind for m in matrices}),
        "matrices": len(matrices),
        "at_noise_level": sum(m.at_noise_level for m in matrices),
        "energy_90": module_medians(matrices, energy),
        "rank_bound": module_medians(matrices, bound),
        "dim": module_medians(matrices, lambda m: float(min(m.shape))),
        "energy_90_all": median(energy(m) for m in matrices),
        "rank_bound_all": median(bound(m) for m in matrices),
        # the sparsity profile per module type: {median, q1, q3, layers} of each share (rank_statistics)
        "sparsity": {
            module: {key: row[key] for key in SPARSITY_MEASURES if key in row}
            for module, row in statistics.items()
            if ":" not in module
        },
        "sparsity_all": {
            key: median(v for m in matrices if (v := getattr(m.sparsity, key, None)) is not None)
            for key in SPARSITY_MEASURES
        },
        "sparsity_atol": result.sparsity_atol,
        "other_kinds": {
            kind: {
                "matrices": len(ms),
                "energy_90": module_medians(ms, energy),
                "energy_90_all": median(energy(m) for m in ms),
            }
            for kind, ms in others.items()
        },
    }


def delta_placement(method: str, run_dir: Path, qlora_base: Path, work: Path) -> dict[str, Any]:
    """Where ΔW lands among the base weights' singular directions (`deltarank placement`), per module type:
    the spread over layers of every measure at k = ΔW's r₀.₉ and of the relative change of W₀'s σ₁."""
    from deltarank.analysis.results.medians import median
    from deltarank.analysis.results.placement import MATCHED_KEY
    from deltarank.analysis.tools.placement import placement

    result = placement(base_weights(method, qlora_base), run_dir)
    result.to_json(work / f"{method}.placement.json")
    matched = [s for m in result.matrices if ":" not in m.module and (s := m.at(MATCHED_KEY)) is not None]
    return {
        "matrices": len(matched),
        "modules": {
            module.module: {
                **module.subspaces.get(MATCHED_KEY, {}),
                "sigma1_change": module.sigma_change[0] if module.sigma_change else None,
            }
            for module in result.modules
            if ":" not in module.module
        },
        # over every matrix: the shares of ‖ΔW‖² in W₀'s top-k and bottom-k directions and their chance k/d
        "all": {
            f"{side}_{measure}": median(v for s in matched if (v := s.value(side, measure)) is not None)
            for side in ("left", "right")
            for measure in ("top", "bottom", "chance", "mean_cos2")
        },
    }


def base_weights(method: str, qlora_base: Path) -> Path:
    """The weights a method's run trained from (qlora: the fp32 copy its 4-bit base was quantized from)."""
    from deltarank.train.models import resolve_model

    if method == "qlora":
        return qlora_base
    source = resolve_model(MODEL)
    return Path(source.directory) / (source.gguf_file or "")


def measure(
    method: str, budget: argparse.Namespace, evaluator: Evaluator, qlora_base: Path
) -> dict[str, Any]:
    """Train, evaluate and (for weight-changing methods) analyse ΔW of one method."""
    work = Path(budget.work)
    run_dir = work / method
    load_before = os.getloadavg()
    started = time.perf_counter()
    run = train(method, str(qlora_base) if method == "qlora" else MODEL, run_dir, budget)
    trained = time.perf_counter()
    losses = evaluator.losses(tuned_model(method, run_dir, qlora_base))
    evaluated = time.perf_counter()
    delta = None if method in NO_DELTA else delta_spectrum(method, run_dir, qlora_base, work)
    analysed = time.perf_counter()
    placed = None if method in NO_DELTA else delta_placement(method, run_dir, qlora_base, work)
    return {
        "method": method,
        "budget": {"steps": budget.steps, "batch_size": budget.batch_size, "seq_len": budget.seq_len},
        "torch_threads": budget.threads,
        "run": run,
        **losses,
        "delta": delta,
        "placement": placed,
        "seconds": {
            "train_process": trained - started,
            "evaluate": evaluated - trained,
            "spectrum": analysed - evaluated,
            "placement": time.perf_counter() - analysed,
        },
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def base_losses(results: Path, evaluator: Evaluator) -> dict[str, Any]:
    """The base model's held-out and general-text losses (cached as base.json)."""
    path = results / "base.json"
    if path.is_file():
        return dict(json.loads(path.read_text()))
    from deltarank.train.models import load_model

    record = {"method": "base", **evaluator.losses(load_model(evaluator.source).eval())}
    write_atomic(path, json.dumps(record, indent=1) + "\n")
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--methods", default=",".join(METHODS), help="comma-separated, from: " + ", ".join(METHODS)
    )
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads of every process (1: no spinning on a busy machine)",
    )
    parser.add_argument("--results", default=str(HERE / "results"))
    parser.add_argument("--work", default=str(HERE / "out" / "methods"))
    parser.add_argument("--report-only", action="store_true", help="redraw table and figure from the cache")
    args = parser.parse_args()
    chosen = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in chosen if m not in METHODS]
    if unknown:
        parser.error(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    results, work = Path(args.results), Path(args.work)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the training processes read it at start
    import torch

    torch.set_num_threads(args.threads)
    cache = results / "methods"
    cache.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        qlora_base = fp32_model_dir() if "qlora" in chosen else Path()
        evaluator = Evaluator(work, args.seq_len)
        base_losses(cache, evaluator)
        for method in chosen:
            path = cache / f"{method}.json"
            if path.is_file():
                print(f"[{method}] measured already ({path}), skipping", flush=True)
                continue
            print(f"[{method}] training {args.steps} steps of {args.batch_size} × {args.seq_len}", flush=True)
            try:
                record = measure(method, args, evaluator, qlora_base)
            except Exception:  # one method's failure must not cost the others their measurement
                print(f"[{method}] FAILED, not cached:\n{traceback.format_exc()}", flush=True)
                continue
            write_atomic(path, json.dumps(record, indent=1) + "\n")
            print(f"[{method}] done: {json.dumps(record['seconds'])}", flush=True)
            report(cache, results)
    report(cache, results)


def report(cache: Path, results: Path) -> None:
    """methods.md and the figure from every cached method, in the table's order."""
    write_report(cache, results, [m for m in METHODS if (cache / f"{m}.json").is_file()])


if __name__ == "__main__":
    main()
