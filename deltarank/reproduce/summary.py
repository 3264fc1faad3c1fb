"""The reproduction's `summary.json` (schema `deltarank.reproduce/1`) and its human-readable `report.md`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deltarank.analysis.results import SpectrumResult
from deltarank.analysis.results.medians import median
from deltarank.analysis.results.rank_claim import describe, rank_multiple
from deltarank.io.atomic import write_atomic
from deltarank.io.model_ref import read_run_record
from deltarank.reproduce.config import METHODS, ReproduceConfig, checkpoints

SCHEMA = "deltarank.reproduce/1"
COST_KEYS = (
    "parameters",
    "steps",
    "tokens_seen",
    "train_seconds",
    "wall_seconds",
    "tokens_per_second",
    "peak_memory_bytes",
    "peak_memory_kind",
)


def module_table(full: SpectrumResult, lora: SpectrumResult, lora_r: int) -> dict[str, dict[str, float]]:
    """Per module type: median energy_90 of the full and LoRA deltas, their dimension and the ratio to r."""
    table: dict[str, dict[str, float]] = {}
    lora_groups = lora.by_module()
    for module, items in full.by_module().items():
        full_e90 = _known(median(m.ranks.get("energy_90") for m in items))
        lora_items = lora_groups.get(module, [])
        table[module] = {
            "full_energy_90_median": full_e90,
            "lora_energy_90_median": _known(median(m.ranks.get("energy_90") for m in lora_items)),
            "full_noise_floor_median": _known(median(m.ranks.get("noise_floor") for m in items)),
            "random_energy_90_median": _known(median(m.random_energy_90 for m in items)),
            "dim": min(items[0].shape),
            "full_over_lora_r": full_e90 / lora_r,
        }
    return table


def _known(value: float | None) -> float:
    """A median for the report's table: NaN when no matrix gives the value."""
    return float("nan") if value is None else value


def build_summary(
    config: ReproduceConfig,
    runs: dict[str, Path],
    evaluation: dict[str, dict[str, float]],
    spectra: dict[str, list[SpectrumResult]],
    subspace: dict[str, Any],
) -> dict[str, Any]:
    """Everything the report, the learning-vs-forgetting figure and a reader need, in one dict."""
    base = evaluation["base"]
    final_key = {m: f"{m}@{checkpoints(runs[m])[-1][0]}" for m in METHODS}
    modules = module_table(spectra["full"][-1], spectra["lora"][-1], config.lora_r)
    claim = rank_multiple({m: row["full_energy_90_median"] for m, row in modules.items()}, config.lora_r)
    summary: dict[str, Any] = {
        "schema": SCHEMA,
        "domain": config.domain,
        "quick": config.quick,
        "lora_r": config.lora_r,
        "modules": modules,
        "headline": headline(claim),
        "learning": {
            "base": base["target_loss"],
            **{m: evaluation[final_key[m]]["target_loss"] for m in METHODS},
        },
        "forgetting": {m: evaluation[final_key[m]]["general_loss"] - base["general_loss"] for m in METHODS},
        "base": {"target_loss": base["target_loss"], "general_loss": base["general_loss"]},
        "cost": {m: _cost(runs[m]) for m in METHODS},
        "points": _points(runs, evaluation),
    }
    if "math_accuracy" in base:
        summary["math_accuracy"] = {
            "base": base["math_accuracy"],
            **{m: evaluation[final_key[m]].get("math_accuracy") for m in METHODS},
        }
    summary["subspace"] = _subspace_summary(subspace)
    return summary


def headline(claim: dict[str, Any]) -> dict[str, Any]:
    """summary.json's `headline`: the rank claim (`deltarank.analysis.results.rank_claim`) with both views.

    `mlp_full_energy_90_over_lora_r` and `holds` (the MLP view inside the claim's 10–100×) keep their names
    for readers of earlier summaries; `all_modules_full_energy_90_over_lora_r`, `verdict` (the claim's, over
    every view) and `rank_claim` (the views in full) say the rest.
    """
    views = claim["views"]
    return {
        "mlp_full_energy_90_over_lora_r": views["mlp"]["multiple"],
        "all_modules_full_energy_90_over_lora_r": views["all_modules"]["multiple"],
        "holds": views["mlp"]["verdict"] == "supported",
        "verdict": claim["verdict"],
        "rank_claim": claim,
    }


def _cost(run_dir: Path) -> dict[str, Any]:
    run = read_run_record(run_dir)
    return {key: run[key] for key in COST_KEYS if key in run}


def _points(runs: dict[str, Path], evaluation: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    points = []
    for method in METHODS:
        run = read_run_record(runs[method])
        tokens_per_step = run.get("tokens_seen", 0) / max(int(run.get("steps", 1) or 1), 1)
        for step, _ in checkpoints(runs[method]):
            metrics = evaluation[f"{method}@{step}"]
            points.append(
                {
                    "run": method,
                    "step": step,
                    "tokens": round(step * tokens_per_step),
                    "target_loss": metrics["target_loss"],
                    "general_loss": metrics["general_loss"],
                }
            )
    return points


def _subspace_summary(subspace: dict[str, Any]) -> dict[str, Any]:
    from deltarank.analysis.results.similarity import SimilarityResult
    from deltarank.analysis.tools.intruders import IntruderResult

    out: dict[str, Any] = {}
    for method in ("full", "lora"):
        key = f"intruders_{method}"
        if key in subspace:
            result = IntruderResult.from_json(subspace[key])
            out[f"intruders_{method}_total"] = result.total()
            out[f"intruders_{method}_per_matrix"] = result.total() / max(len(result.matrices), 1)
    if "similarity" in subspace:
        sim = SimilarityResult.from_json(subspace["similarity"])
        out["phi_full_vs_lora_top16"] = sim.module_means(16)
    return out


def write_report(path: Path, summary: dict[str, Any]) -> None:
    """A Markdown report with the headline, learning/forgetting, cost and the per-module table."""
    lines = [f"# deltarank reproduce ({summary['domain']}, {'quick' if summary['quick'] else 'long'})", ""]
    claim = summary["headline"]["rank_claim"]
    lines += [
        "Full fine-tuning's ΔW has 10–100× the rank of LoRA's (energy_90 of the full ΔW, median over layers, "
        f"÷ r): {describe(claim)}; verdict **{claim['verdict']}**.",
        "",
        "| module | dim | full energy_90 | LoRA energy_90 | full ÷ r | full noise_floor | Gaussian energy_90 |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for module, row in summary["modules"].items():
        lines.append(
            f"| {module} | {row['dim']} | {row['full_energy_90_median']:g} | {row['lora_energy_90_median']:g} | "
            f"{row['full_over_lora_r']:.1f}× | {row['full_noise_floor_median']:g} | {row['random_energy_90_median']:g} |"
        )
    learn, forget = summary["learning"], summary["forgetting"]
    lines += [
        "",
        "| run | held-out target loss | forgetting (general-text loss increase) | tokens/s | wall s |",
    ]
    lines += ["|---|---:|---:|---:|---:|", f"| base | {learn['base']:.4f} | – | – | – |"]
    for method in ("full", "lora"):
        cost = summary["cost"][method]
        lines.append(
            f"| {method} | {learn[method]:.4f} | {forget[method]:+.4f} | "
            f"{cost.get('tokens_per_second', float('nan')):.0f} | {cost.get('wall_seconds', float('nan')):.0f} |"
        )
    if "math_accuracy" in summary:
        acc = summary["math_accuracy"]
        lines += [
            "",
            "Math exact-match accuracy: "
            + ", ".join(f"{k} {v:.1%}" for k, v in acc.items() if v is not None),
        ]
    sub = summary.get("subspace", {})
    if sub:
        lines += ["", "Subspace: " + ", ".join(f"{k} = {_fmt(v)}" for k, v in sub.items())]
    write_atomic(path, "\n".join(lines) + "\n")


def _fmt(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {v:.2f}" for k, v in value.items()) + "}"
    return f"{value:.2f}" if isinstance(value, float) else str(value)
