"""summary.json (schema `deltarank.reproduce/1`) of a study that is a reproduction: a view of its study.json.

Every number comes from the study's own measurements (its rows, base measurements, kept spectra and subspace
files); nothing is evaluated again. The keys are those `deltarank reproduce` has always written (the learning
figure and other tools read them): `learning` and `base.target_loss` are the held-out losses, `forgetting` the
rise of the general-text loss (the estimate of KL(base ‖ tuned) per token, `deltarank.evaluation.drift`),
`points` one per measured checkpoint, `modules` the per-module-type medians of energy_90 of the final full and
LoRA spectra, `headline` the rank claim in its named views (`deltarank.analysis.results.rank_claim`), which
report.md states in the same words.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from deltarank.analysis.results import SpectrumResult
from deltarank.analysis.results.medians import median
from deltarank.analysis.results.rank_claim import describe, describe_width, rank_multiple, width_share
from deltarank.analysis.results.rank_statistics import module_rank_statistics
from deltarank.errors import DeltarankError
from deltarank.figures.learning import SUMMARY_SCHEMA
from deltarank.io.atomic import write_json
from deltarank.io.model_ref import read_run_record
from deltarank.study.design.reproduction import RUNS
from deltarank.study.measure.subspace import PHI_TOP
from deltarank.study.report.cells import fmt, forgetting_cell

SUMMARY_JSON = "summary.json"
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


def module_table(
    full: SpectrumResult, lora: SpectrumResult, lora_r: int, full_statistics: Mapping[str, Any] | None = None
) -> dict[str, dict[str, float | None]]:
    """Per module type: median energy_90 of the full and LoRA deltas, their dimension, the ratio to r and the
    share of the width (from `full_statistics`, the full run's `module_rank_statistics`; computed when not
    given), None where no matrix gives the value."""
    stats = full_statistics if full_statistics is not None else module_rank_statistics(full)
    table: dict[str, dict[str, float | None]] = {}
    lora_groups = lora.by_module()
    for module, items in full.by_module().items():
        full_e90 = median(m.ranks.get("energy_90") for m in items)
        lora_items = lora_groups.get(module, [])
        over_width = (stats.get(module) or {}).get("energy_90_over_width")
        table[module] = {
            "full_energy_90_median": full_e90,
            "full_energy_90_over_width_median": None if over_width is None else over_width["median"],
            "lora_energy_90_median": median(m.ranks.get("energy_90") for m in lora_items),
            "full_noise_floor_median": median(m.ranks.get("noise_floor") for m in items),
            "random_energy_90_median": median(m.random_energy_90 for m in items),
            "dim": min(items[0].shape),
            "full_over_lora_r": None if full_e90 is None else full_e90 / lora_r,
        }
    return table


def build_summary(
    document: Mapping[str, Any], study_dir: Path, elapsed_s: float | None = None
) -> dict[str, Any]:
    """summary.json of a reproduction study, from its study.json `document` and the files in `study_dir`.

    Raises:
        DeltarankError: the study has no runs full and lora, or they kept no spectra.
    """
    from deltarank.train.builtin_data import parse_builtin

    rows = {str(r["name"]): r for r in document["runs"]}
    if not set(RUNS) <= set(rows):
        raise DeltarankError(f"{study_dir}: a reproduction needs runs full and lora")
    file = document["study"]["file"]
    schedule = str(file.get("reproduce"))
    domain = parse_builtin(str(rows["full"]["settings"]["data"])).dataset  # checked when the study was read
    full, lora = rows["full"], rows["lora"]
    base = document["bases"][full["base"]]
    lora_r = int(lora["settings"]["lora_r"])
    spectra = {}
    for m in RUNS:
        if not rows[m].get("spectrum"):
            raise DeltarankError(f"{study_dir}: run {m} kept no spectrum (measure it again)")
        spectra[m] = SpectrumResult.from_json(study_dir / rows[m]["spectrum"])
    statistics = {m: module_rank_statistics(spectra[m], lora_r) for m in RUNS}
    modules = module_table(spectra["full"], spectra["lora"], lora_r, statistics["full"])
    claim = rank_multiple({m: row["full_energy_90_median"] for m, row in modules.items()}, lora_r)
    width = width_share({m: row["full_energy_90_over_width_median"] for m, row in modules.items()})
    summary: dict[str, Any] = {
        "schema": SUMMARY_SCHEMA,
        "domain": domain,
        "quick": schedule == "quick",
        "lora_r": lora_r,
        "modules": modules,
        "headline": headline(claim, width),
        "rank_statistics": statistics,
        "learning": {
            "base": base["learning"]["held_out_loss"],
            **{m: rows[m]["learning"]["held_out_loss"] for m in RUNS},
        },
        "forgetting": {m: rows[m]["forgetting"]["general_loss_rise"] for m in RUNS},
        "base": {
            "target_loss": base["learning"]["held_out_loss"],
            "general_loss": base["forgetting"]["general_loss"],
        },
        "cost": {m: _cost(study_dir / m) for m in RUNS},
        "points": [_point(m, p) for m in RUNS for p in _curve(rows[m])],
    }
    if "accuracy" in base["learning"]:
        summary["math_accuracy"] = {
            "base": base["learning"]["accuracy"],
            **{m: rows[m]["learning"].get("accuracy") for m in RUNS},
        }
    summary["intervals"] = _intervals(rows)
    summary["subspace"] = _subspace(document.get("subspace", {}))
    if elapsed_s is not None:
        summary["elapsed_s"] = round(elapsed_s, 1)
    return summary


def write_summary(path: Path, summary: Mapping[str, Any]) -> None:
    """Write summary.json (atomically; NaN refused: an unknown median is null). Read by
    `deltarank.figures.learning.load_summary`."""
    write_json(path, summary)


def headline(claim: dict[str, Any], width: dict[str, Any]) -> dict[str, Any]:
    """summary.json's `headline`: the rank claim (`deltarank.analysis.results.rank_claim`) with both views,
    divided by r and, width-aware, as a share of the width.

    `mlp_full_energy_90_over_lora_r` and `holds` (the MLP view inside the claim's 10–100×) keep their names
    for readers of earlier summaries; `all_modules_full_energy_90_over_lora_r`, `verdict` (the claim's, over
    every view) and `rank_claim` (the views in full) say the rest; `width_claim` is the same claim as a share
    of the width against the paper's 3.9–39% (its own verdict).
    """
    views = claim["views"]
    return {
        "mlp_full_energy_90_over_lora_r": views["mlp"]["multiple"],
        "all_modules_full_energy_90_over_lora_r": views["all_modules"]["multiple"],
        "holds": views["mlp"]["verdict"] == "consistent",
        "verdict": claim["verdict"],
        "rank_claim": claim,
        "mlp_full_energy_90_over_width": width["views"]["mlp"]["multiple"],
        "all_modules_full_energy_90_over_width": width["views"]["all_modules"]["multiple"],
        "width_claim": width,
    }


def _intervals(rows: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """95% intervals of evaluation noise (`deltarank.evaluation.paired`): each run's held-out loss change and
    general-text loss rise against the base, and full − LoRA of both (None where the runs kept no per-sequence
    losses, measured before they were recorded)."""
    from deltarank.evaluation.paired import METHOD, paired_difference

    full, lora = ((rows[m].get("per_sequence") or {}) for m in RUNS)
    between = {
        key: paired_difference(full[part], lora[part]) if part in full and part in lora else None
        for key, part in (
            ("full_minus_lora_held_out_loss", "held_out"),
            ("full_minus_lora_general_loss", "general"),
        )
    }
    return {
        "method": METHOD,
        "held_out_loss_change": {m: rows[m]["learning"].get("held_out_loss_change_ci95") for m in RUNS},
        "forgetting": {m: rows[m]["forgetting"].get("general_loss_rise_ci95") for m in RUNS},
        **between,
    }


def _curve(row: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The measured points of a run: its checkpoints (final included), or the final alone."""
    if row.get("checkpoints"):
        return list(row["checkpoints"])
    final = {
        "held_out_loss": row["learning"]["held_out_loss"],
        "general_loss": row["forgetting"]["general_loss"],
    }
    return [{"step": row["cost"].get("steps"), "tokens": row["cost"].get("tokens"), **final}]


def _point(run: str, point: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "run": run,
        "step": point["step"],
        "tokens": point["tokens"],
        "target_loss": point["held_out_loss"],
        "general_loss": point["general_loss"],
    }


def _cost(run_dir: Path) -> dict[str, Any]:
    run = read_run_record(run_dir)
    return {key: run[key] for key in COST_KEYS if key in run}


def _subspace(section: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for run, counts in section.get("intruders", {}).items():
        if run in RUNS:
            out[f"intruders_{run}_total"] = counts["total"]
            out[f"intruders_{run}_per_matrix"] = counts["per_matrix"]
    for pair in section.get("similarity", []):
        if list(pair["runs"]) == list(RUNS):
            out[f"phi_full_vs_lora_top{PHI_TOP}"] = pair[f"phi_top{PHI_TOP}"]
            if f"phi_chance_top{PHI_TOP}" in pair:  # two random subspaces of these sizes: max(i, j)/dimension
                out[f"phi_chance_top{PHI_TOP}"] = pair[f"phi_chance_top{PHI_TOP}"]
    return out


def summary_section(summary: Mapping[str, Any]) -> list[str]:
    """report.md's reproduction section: the rank claim, the per-module table, learning, forgetting, cost."""
    claim = summary["headline"]["rank_claim"]
    lines = [
        f"## Reproduction: LoRA Learns Less and Forgets Less ({summary['domain']}, "
        f"{'quick' if summary['quick'] else 'long'})",
        "",
        "Full fine-tuning's ΔW has 10–100× the rank of LoRA's (energy_90 of the full ΔW, median over layers, "
        f"÷ r): {describe(claim)}; verdict **{claim['verdict']}**.",
        "",
        f"Width-aware (energy_90 ÷ min(m, n)): {describe_width(summary['headline']['width_claim'])}; verdict "
        f"**{summary['headline']['width_claim']['verdict']}**.",
        "",
        "| module | width | full energy_90 | LoRA energy_90 | full ÷ r | full noise_floor | Gaussian energy_90 |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for module, row in summary["modules"].items():
        lines.append(
            f"| {module} | {row['dim']} | {fmt(row['full_energy_90_median'], 'g')} | "
            f"{fmt(row['lora_energy_90_median'], 'g')} | {fmt(row['full_over_lora_r'], '.1f')}× | "
            f"{fmt(row['full_noise_floor_median'], 'g')} | {fmt(row['random_energy_90_median'], 'g')} |"
        )
    lines += ["", *rank_statistics_table(summary)]
    learn, forget = summary["learning"], summary["forgetting"]
    intervals = summary.get("intervals") or {}
    changes, rises = intervals.get("held_out_loss_change") or {}, intervals.get("forgetting") or {}
    lines += [
        "",
        "| run | held-out target loss | change [95% CI] | forgetting: KL(base‖tuned), nats/token [95% CI] | "
        "tokens/s | wall s |",
        "|---|---:|---:|---:|---:|---:|",
        f"| base | {fmt(learn['base'], '.4f')} | – | – | – | – |",
    ]
    for method in RUNS:
        cost = summary["cost"][method]
        change = None if learn[method] is None or learn["base"] is None else learn[method] - learn["base"]
        lines.append(
            f"| {method} | {fmt(learn[method], '.4f')} | {fmt(change, '+.4f')} {_ci(changes.get(method))} | "
            f"{forgetting_cell(forget[method], rises.get(method))} {_ci(rises.get(method))} | "
            f"{fmt(cost.get('tokens_per_second'), '.0f')} | {fmt(cost.get('wall_seconds'), '.0f')} |"
        )
    between = [
        f"{what} {fmt(found['estimate'], '+.4f')} {_ci([found['ci95_low'], found['ci95_high']])} "
        f"({found['sequences']} sequences)"
        for what, key in (
            ("held-out loss", "full_minus_lora_held_out_loss"),
            ("forgetting", "full_minus_lora_general_loss"),
        )
        if (found := intervals.get(key))
    ]
    if between:
        lines += ["", f"Full − LoRA: {'; '.join(between)}. Intervals: {intervals['method']}."]
    if "math_accuracy" in summary:
        acc = summary["math_accuracy"]
        lines += [
            "",
            "Math exact-match accuracy: " + ", ".join(f"{k} {fmt(v, '.1%')}" for k, v in acc.items()),
        ]
    sub = summary.get("subspace", {})
    if sub:
        lines += ["", "Subspace: " + ", ".join(f"{k} = {_fmt(v)}" for k, v in sub.items())]
    return lines


def rank_statistics_table(summary: Mapping[str, Any]) -> list[str]:
    """The width-aware table: per module type the full ΔW's energy_90 (median [interquartile range] over
    layers) ÷ r, ÷ width, ÷ the Gaussian energy_90 of its shape, its stable rank and participation ratio, and
    LoRA's measured energy_90 beside the configured r."""
    stats = summary.get("rank_statistics") or {}
    full, lora = stats.get("full") or {}, stats.get("lora") or {}
    lines = [
        f"Width-aware ranks of the full ΔW (median [interquartile range] over layers; LoRA r = {summary['lora_r']}):",
        "",
        "| module | width | energy_90 | ÷ r | ÷ width | ÷ Gaussian | stable rank | participation | LoRA energy_90 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for module, row in full.items():
        lines.append(
            f"| {module} | {row['width']} | {_spread(row.get('energy_90'), 'g')} | "
            f"{_spread(row.get('energy_90_over_r'), '.1f')} | {_spread(row.get('energy_90_over_width'), '.0%')} | "
            f"{_spread(row.get('energy_90_over_gaussian'), '.2f')} | {_spread(row.get('stable'), '.1f')} | "
            f"{_spread(row.get('participation'), '.1f')} | {_spread((lora.get(module) or {}).get('energy_90'), 'g')} |"
        )
    return lines


def _ci(bounds: Sequence[float] | None) -> str:
    """`[−0.0123, +0.0045]`, or empty without an interval."""
    if not bounds:
        return ""
    return f"[{fmt(bounds[0], '+.4f')}, {fmt(bounds[1], '+.4f')}]"


def _spread(value: Mapping[str, Any] | None, spec: str) -> str:
    """`median [q1–q3]` of a spread, `–` without one."""
    if not value:
        return "–"
    return f"{fmt(value['median'], spec)} [{fmt(value['q1'], spec)}–{fmt(value['q3'], spec)}]"


def _fmt(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {v:.2f}" for k, v in value.items()) + "}"
    return f"{value:.2f}" if isinstance(value, float) else str(value)
