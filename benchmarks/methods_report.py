"""The table (methods.md) and figure (methods_rank_vs_params.png) of benchmarks/methods.py, from its cache."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

from deltarank.figures.save import save_figure
from deltarank.figures.style import (
    DOUBLE_COLUMN_IN,
    new_figure,
    paper_style,
    plain_log_axis,
    run_color,
    run_marker,
    short_module,
)
from deltarank.io.atomic import write_atomic
from deltarank.io.training_methods import REGISTRY

MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
FIGURE = "methods_rank_vs_params"
MIB = 2**20
# Display names from the method registry; the table abbreviates full fine-tuning and names lora's variants.
LABELS = {
    **{m.name: m.display for m in REGISTRY.values()},
    "full": "full FT",
    "rslora": "rsLoRA",
    "dora": "DoRA",
}


def label(method: str) -> str:
    """Display name of a method."""
    return LABELS.get(method, method)


def human_count(n: float) -> str:
    """134.5M, 921.6k, 320."""
    if n >= 1e6:
        return f"{n / 1e6:.1f}M"
    if n >= 1e3:
        return f"{n / 1e3:.1f}k"
    return f"{n:.0f}"


def human_bytes(n: float) -> str:
    """Bytes in KiB / MiB."""
    return f"{n / MIB:.1f} MiB" if n >= MIB else f"{n / 1024:.0f} KiB"


def rank_cell(value: float | None) -> str:
    """A median rank: integers plain, halves with one decimal."""
    if value is None:
        return "–"
    return f"{value:.0f}" if value == int(value) else f"{value:.1f}"


def main_row(record: dict[str, Any], base: dict[str, Any]) -> str:
    """One line of the cost / learning / forgetting / rank table."""
    run, delta = record["run"], record["delta"]
    params = run["parameters"]
    cells = [
        label(record["method"]),
        f"{run['config']['lr']:.0e}".replace("e-0", "e-"),
        human_count(params["trainable"]),
        f"{100 * params['trainable_share_of_base']:.3g}%",
        human_bytes(run["stored_bytes"]),
        f"{run['tokens_per_second']:.0f}",
        f"{run['train_seconds']:.0f} s",
        f"{run['peak_memory_bytes'] / 2**30:.2f} GiB",
        f"{record['target_loss']:.3f}",
        f"{record['general_loss'] - base['general_loss']:+.4f}",
    ]
    if delta is None:
        cells += ["no ΔW", "–"]
    else:
        cells += [rank_cell(delta["energy_90_all"]), rank_cell(delta["rank_bound_all"])]
    return "| " + " | ".join(cells) + " |"


def module_row(record: dict[str, Any]) -> str:
    """One line of the per-module-type table: median energy_90 / median structural bound."""
    delta = record["delta"]
    cells = [label(record["method"])]
    for module in MODULES:
        if module not in delta["energy_90"]:
            cells.append("–")
            continue
        cells.append(f"{rank_cell(delta['energy_90'][module])} / {rank_cell(delta['rank_bound'][module])}")
    return "| " + " | ".join(cells) + " |"


def budget_sentence(records: list[dict[str, Any]]) -> str:
    """The shared budget, said once."""
    b = records[0]["budget"]
    tokens = sorted({r["run"]["tokens_seen"] for r in records})
    seen = f"{tokens[0]:,}" if len(tokens) == 1 else f"{tokens[0]:,}–{tokens[-1]:,}"
    return (
        f"{b['steps']} steps of {b['batch_size']} × {b['seq_len']} tokens on `builtin:code` for every method "
        f"(tokens counted by the Trainer: {seen}), seed 0, each method's default learning rate and options"
    )


def write_report(cache: Path, results: Path, methods: list[str]) -> None:
    """methods.md and the figure from the cached records of `methods` (in that order)."""
    if not methods:
        return
    records = [json.loads((cache / f"{m}.json").read_text()) for m in methods]
    base = json.loads((cache / "base.json").read_text())
    write_atomic(results / "methods.md", markdown(records, base))
    draw(records, results)


def markdown(records: list[dict[str, Any]], base: dict[str, Any]) -> str:
    """The whole results file."""
    import torch

    lines = [
        "# The price of each fine-tuning method (SmolLM2-135M, CPU)",
        "",
        "Regenerate with `python benchmarks/methods.py` (its docstring says what is measured; each method's",
        "numbers are cached in `benchmarks/results/methods/`, delete a file to measure that method again).",
        "",
        f"Budget: {budget_sentence(records)}.",
        "",
        "| method | lr | trainable | share of base | stored | tokens/s | train time | peak RSS | held-out code loss "
        "| forgetting | ΔW energy_90 (median) | rank bound (median) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| base | – | – | – | – | – | – | – | {base['target_loss']:.3f} | – | – | – |",
        *(main_row(r, base) for r in records),
        "",
        "Forgetting is the rise of the per-token loss on the base model's own answers to 16 general prompts "
        f"(base: {base['general_loss']:.4f}), as `deltarank reproduce` measures it; held-out loss is on the "
        "first 32 sequences of `builtin:code:test`. ΔW energy_90 is the median over every analysed matrix of "
        "the number of directions holding 90% of ‖ΔW‖²; the rank bound is the median of what the method's "
        "structure allows (LoRA r, LoHa r², LoKr's product, IA3's changed scales, min(shape) when nothing "
        "bounds it: full, OFT, BOFT). Prompt, prefix, P-tuning and bottleneck adapters change no weight: "
        "no ΔW. Tokens/s and peak RSS are run.json's (training only; peak RSS of the whole process).",
        "",
        "Median energy_90 / median rank bound per module type:",
        "",
        "| method | " + " | ".join(short_module(m) for m in MODULES) + " |",
        "|---|" + "---:|" * len(MODULES),
        *(module_row(r) for r in records if r["delta"] is not None),
        "",
        *other_kinds(records),
        f"![effective rank of ΔW against trainable parameters]({FIGURE}.png)",
        "",
        "Load average (1, 5, 15 min) before and after each method (the 2 cores are shared with other jobs; "
        "every process ran with autogroup priority -10):",
        "",
        *(
            f"- {r['method']} (finished {r['date']}): {fmt_load(r['load_average']['before'])} → "
            f"{fmt_load(r['load_average']['after'])}; train process {r['seconds']['train_process']:.0f} s, "
            f"evaluation {r['seconds']['evaluate']:.0f} s, spectrum {r['seconds']['spectrum']:.0f} s"
            for r in records
        ),
        "",
        f"Machine: {os.cpu_count()} cores of an {cpu_name()}, no GPU, torch {torch.__version__} with {threads(records)} thread(s) per process, "
        f"Python {platform.python_version()}; table written {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
    ]
    return "\n".join(lines)


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo (the machine's architecture elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def other_kinds(records: list[dict[str, Any]]) -> list[str]:
    """Lines for the extra records a spectrum gave (qlora: the 4-bit rounding of the base, and both)."""
    lines = []
    for r in records:
        for kind, found in ((r["delta"] or {}).get("other_kinds") or {}).items():
            lines.append(
                f"{label(r['method'])}, spectrum records of kind `{kind}` ({found['matrices']} matrices): median "
                f"energy_90 {rank_cell(found['energy_90_all'])} over all of them."
            )
    return [*lines, ""] if lines else []


def threads(records: list[dict[str, Any]]) -> str:
    """The torch thread count the records were measured with (a list if they differ)."""
    return ", ".join(sorted({str(r.get("torch_threads", "default")) for r in records}))


def fmt_load(load: list[float]) -> str:
    """(1.2, 3.4, 5.6)."""
    return "(" + ", ".join(f"{v:.1f}" for v in load) + ")"


def draw(records: list[dict[str, Any]], results: Path) -> None:
    """Median energy_90 of ΔW against trainable parameters, one labelled point per method (bound hollow)."""
    with paper_style():
        fig = new_figure(DOUBLE_COLUMN_IN * 0.7, 3.2)
        ax = fig.add_subplot()
        shown = [r for r in records if r["delta"] is not None]
        groups: list[tuple[float, float, list[str]]] = []
        for i, r in enumerate(shown):
            x = r["run"]["parameters"]["trainable"]
            y, bound = r["delta"]["energy_90_all"], r["delta"]["rank_bound_all"]
            color, marker = run_color(i), run_marker(i)
            ax.plot([x, x], [y, bound], color=color, linewidth=0.6, alpha=0.5)
            ax.scatter([x], [bound], s=22, facecolors="none", edgecolors=color, marker=marker, linewidths=0.8)
            ax.scatter([x], [y], s=22, color=color, marker=marker, zorder=3)
            group = next((g for g in groups if abs(g[0] / x - 1) < 0.2 and abs(g[1] / y - 1) < 0.3), None)
            if group is None:  # points close together share one label, so no text is drawn over another
                groups.append((x, y, [label(r["method"])]))
            else:
                group[2].append(label(r["method"]))
        for x, y, names in groups:
            ax.annotate(", ".join(names), (x, y), textcoords="offset points", xytext=(5, -3), fontsize=6.5)
        ax.set_xscale("log")
        ax.set_yscale("log")
        plain_log_axis(ax.yaxis)
        ax.set_xlabel("trainable parameters")
        ax.set_ylabel("median energy_90 of ΔW (filled)\nstructural rank bound (hollow)")
        missing = [label(r["method"]) for r in records if r["delta"] is None]
        if missing:
            ax.set_title("no ΔW: " + ", ".join(missing), fontsize=6.5, loc="right")
        save_figure(fig, results, FIGURE, ("png",))
