"""report.md's "Evidence-based ranks" section: each LoRA run with recommended ranks (`recommend:`) against the
uniform LoRA and AdaLoRA runs of its context, from study.json alone (the statistics:
`deltarank.study.claims.recommended_ranks`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from deltarank.analysis.results.claim_statistic import describe_statistic
from deltarank.figures.study_rows import Run, forgetting, held_out_loss, method, setting
from deltarank.study.claims.recommended_ranks import compared, is_recommended, recommended_comparisons
from deltarank.study.report.cells import fmt, forgetting_cell

HEADING = "## Evidence-based ranks"
INTRO = (
    "LoRA with per-module ranks chosen by `deltarank recommend` from another run's measured ΔW (the study's "
    "`recommend:` runs) against uniform LoRA and AdaLoRA on the same data and steps. Trainable parameters are "
    "each run's run.json count (AdaLoRA's: its initial rank, before pruning to its target). Declared statistics, "
    "recommended − other: held-out loss (nats/token; claim < 0: the recommended ranks learn more) and forgetting "
    "(nats/token; claim < 0: they forget less), each with its 95% interval (the paired bootstrap over the "
    "evaluation sequences, and Welch's t over seeds where there are two or more) and its verdict."
)


def evidence_section(runs: Sequence[Run]) -> list[str]:
    """The section's lines: the runs compared (ranks, trainable parameters, learning, forgetting), then one line
    per comparison with both statistics; [] without a recommended run."""
    comparisons = recommended_comparisons(runs)
    if not comparisons:
        return []
    names = {n for c in comparisons for key in ("recommended", "other") for n in str(c[key]).split("+")}
    shown = [r for r in runs if str(r.get("name")) in names]
    header = ["run", "method", "ranks", "trainable params", "held-out loss", "forgetting"]
    rows = [
        [
            str(r.get("name")),
            str(method(r)),
            ranks_cell(r),
            fmt((r.get("cost") or {}).get("trainable_parameters"), ","),  # an integer, as run.json has it
            fmt(held_out_loss(r), ".4f"),
            forgetting_cell(forgetting(r), (r.get("forgetting") or {}).get("general_loss_rise_ci95")),
        ]
        for r in shown
    ]
    table = ["| " + " | ".join(header) + " |", "| " + " | ".join(["---"] * 3 + ["---:"] * 3) + " |"]
    table += ["| " + " | ".join(cells) + " |" for cells in rows]
    lines = [HEADING, "", INTRO, "", *table, ""]
    for c in comparisons:
        lines.append(
            f"- **{c['recommended']} against {c['other']}** ({c['other_method']}): learning "
            f"**{c['learning']['verdict']}**, {describe_statistic(c['learning'])}; forgetting "
            f"**{c['forgetting']['verdict']}**, {describe_statistic(c['forgetting'])}."
        )
    return [*lines, ""]


def ranks_cell(run: Mapping[str, Any]) -> str:
    """`budget_rank 16 from full: r = 12 default, 210 modules`, `r = 16`, or `adaptive` (AdaLoRA)."""
    rec = run.get("recommendation")
    if isinstance(rec, Mapping):
        policy = next(
            (f"{k} {rec[k]:g}" for k in ("budget_rank", "energy", "budget") if rec.get(k) is not None), ""
        )
        if rec.get("budget_rank") is not None and rec.get("budget") is not None:
            policy += f" (budget {rec['budget']:,})"
        return f"{policy} from {rec['from']}: r = {rec['lora_r']} default, {rec['modules']} modules"
    if compared(run) and not is_recommended(run) and method(run) != "adalora":
        return f"r = {setting(run, 'lora_r')}"
    return "adaptive" if method(run) == "adalora" else "–"
