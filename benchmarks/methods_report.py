"""The table (methods.md) and figure (methods_rank_vs_params.png) of benchmarks/methods.py, from its cache."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

from deltarank.analysis.results.medians import median
from deltarank.figures.save import save_figure
from deltarank.figures.sparsity import plot_sparsity_points
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
SPARSITY_FIGURE = "methods_sparsity"
PLACEMENT_FIGURE = "methods_placement"
SIDES = ("left", "right")
MIB = 2**20
# Display names from the method registry; the table abbreviates full fine-tuning and names lora's variants.
LABELS = {
    **{m.name: m.display for m in REGISTRY.values()},
    "full": "full FT",
    "rslora": "rsLoRA",
    "dora": "DoRA",
    **{
        f"lora-{init}": f"{name} init"
        for init, name in {
            "gaussian": "Gaussian",
            "pissa": "PiSSA",
            "pissa_niter_4": "PiSSA (4 iter.)",
            "olora": "OLoRA",
            "milora": "MiLoRA",
            "eva": "EVA",
            "corda": "CorDA",
        }.items()
    },
}


def is_init_variant(record: dict[str, Any]) -> bool:
    """A LoRA initialisation's run (lora-<init>): in the tables and the placement figure, left out of the
    figures that place methods (it sits on LoRA's point and crowds the labels and the palette)."""
    return str(record["method"]).startswith("lora-")


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


def share(value: float | None, digits: int = 3) -> str:
    """A share in [0, 1] as a percentage with `digits` significant digits; – when absent."""
    return "–" if value is None else f"{100 * value:.{digits}g}%"


def over_chance(measures: dict[str, Any], side: str, where: str) -> float | None:
    """A placement share over its chance k/d: `side`_`where` ÷ `side`_chance (medians), None if absent."""
    value, chance = measures.get(f"{side}_{where}"), measures.get(f"{side}_chance")
    if isinstance(value, dict):  # a per-module spread: its median
        value, chance = value["median"], (chance or {}).get("median")
    return None if value is None or not chance else value / chance


def ratio_cell(value: float | None) -> str:
    """A ratio to chance: 1.04×, 12.3×."""
    return "–" if value is None else f"{value:.3g}×"


def sigma1_change(placed: dict[str, Any]) -> float | None:
    """The median over module types of each type's median relative change of W₀'s σ₁."""
    return median(m["sigma1_change"]["median"] for m in placed["modules"].values() if m.get("sigma1_change"))


def kind_row(record: dict[str, Any]) -> str:
    """One line of the sparse-or-low-rank and placement table (methods with a ΔW)."""
    sparse = record["delta"].get("sparsity_all") or {}
    within_atol, rounding = sparse.get("within_atol"), sparse.get("within_rounding")
    cells = [
        label(record["method"]),
        share(None if within_atol is None else 1 - within_atol),
        share(rounding),
        "–" if sparse.get("rank_fraction") is None else f"{sparse['rank_fraction']:.3f}",
    ]
    placed = record.get("placement")
    if placed is None:
        cells += ["–"] * 5
    else:
        found = placed["all"]
        cells += [
            ratio_cell(over_chance(found, side, where)) for where in ("top", "bottom") for side in SIDES
        ]
        change = sigma1_change(placed)
        cells.append("–" if change is None else f"{100 * change:+.2g}%")
    return "| " + " | ".join(cells) + " |"


def placement_module_row(record: dict[str, Any]) -> str:
    """Per module type: W₀'s top-k share over chance / bottom-k share over chance (left side, medians)."""
    modules = record["placement"]["modules"]
    cells = [label(record["method"])]
    for module in MODULES:
        found = modules.get(module)
        if not found:
            cells.append("–")
            continue
        top, bottom = over_chance(found, "left", "top"), over_chance(found, "left", "bottom")
        cells.append(f"{ratio_cell(top)} / {ratio_cell(bottom)}")
    return "| " + " | ".join(cells) + " |"


def kind_lines(records: list[dict[str, Any]]) -> list[str]:
    """The section on what kind of change each ΔW is: sparsity profile and placement among W₀'s directions."""
    shown = [r for r in records if r["delta"] is not None and "sparsity_all" in r["delta"]]
    if not shown:
        return []
    atol = next((r["delta"].get("sparsity_atol") for r in shown), None)
    return [
        "## What kind of change: sparse or low-rank, principal or minor directions",
        "",
        f"Entries changed: the share of ΔW's entries with |Δw| > {atol:g} (Mukherjee et al. 2025's tolerance); "
        "rounded away: the share with |Δw| ≤ ulp(w)/2 in the base's storage dtype (what storing W + ΔW in "
        "that dtype would erase; – where the base is stored quantized, as the Q4_1 SmolLM2 GGUF here is, or is not "
        "read: factor-form adapters); rank ÷ width: "
        "numerical rank ÷ min(m, n). Placement (`deltarank placement`): the share of ‖ΔW‖² in the span of W₀'s "
        "top-k and bottom-k singular directions, k = ΔW's own r₀.₉, over the share a random direction would "
        "have (k/d): 1× is chance, left = output side (U), right = input side (V); and the median relative "
        "change of W₀'s largest singular value. Medians over every analysed matrix (σ₁: over module types).",
        "",
        "| method | entries changed | rounded away | rank ÷ width | top-k, left | top-k, right | bottom-k, left "
        "| bottom-k, right | σ₁ change |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        *(kind_row(r) for r in shown),
        "",
        "Top-k share ÷ chance / bottom-k share ÷ chance per module type (left side, ratio of the medians over "
        "layers):",
        "",
        "| method | " + " | ".join(short_module(m) for m in MODULES) + " |",
        "|---|" + "---:|" * len(MODULES),
        *(placement_module_row(r) for r in shown if r.get("placement")),
        "",
        f"![sparse or low-rank: entries changed against rank ÷ width]({SPARSITY_FIGURE}.png)",
        "",
        f"![placement of ΔW among W₀'s top-k and bottom-k singular directions]({PLACEMENT_FIGURE}.png)",
        "",
    ]


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
    if any(r["delta"] is not None and "sparsity" in r["delta"] for r in records):
        draw_sparsity(records, results)
    if any(r.get("placement") for r in records):
        draw_placement(records, results)


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
        *kind_lines(records),
        f"![effective rank of ΔW against trainable parameters]({FIGURE}.png)",
        "",
        "Load average (1, 5, 15 min) before and after each method (the 2 cores are shared with other jobs, at "
        "times a second methods.py process measuring other methods; tokens/s and times compare only roughly):",
        "",
        *(
            f"- {r['method']} (finished {r['date']}): {fmt_load(r['load_average']['before'])} → "
            f"{fmt_load(r['load_average']['after'])}; train process {r['seconds']['train_process']:.0f} s, "
            f"evaluation {r['seconds']['evaluate']:.0f} s, spectrum {r['seconds']['spectrum']:.0f} s"
            + (f", placement {r['seconds']['placement']:.0f} s" if "placement" in r["seconds"] else "")
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
        shown = [r for r in records if r["delta"] is not None and not is_init_variant(r)]
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


def draw_sparsity(records: list[dict[str, Any]], results: Path) -> None:
    """Every method with a ΔW on sparse-vs-low-rank axes (`deltarank plot --kind sparsity`'s figure)."""
    series = []
    for r in records:
        if r["delta"] is None or "sparsity" not in r["delta"] or is_init_variant(r):
            continue
        points = {}
        for module, shares in r["delta"]["sparsity"].items():
            kept, rank = shares.get("within_atol"), shares.get("rank_fraction")
            if kept and rank:
                changed = (1 - kept["q3"], 1 - kept["median"], 1 - kept["q1"])
                points[module] = (changed, (rank["q1"], rank["median"], rank["q3"]))
        series.append((label(r["method"]), points))
    atol = next((r["delta"].get("sparsity_atol") for r in records if r["delta"] is not None), None)
    fig = plot_sparsity_points(series, modules=MODULES, atol=atol)
    save_figure(fig, results, SPARSITY_FIGURE, ("png",))


def draw_placement(records: list[dict[str, Any]], results: Path) -> None:
    """Per method and module type, the share of ‖ΔW‖² in W₀'s top-k (left panel) and bottom-k (right panel)
    singular directions over chance, output side, log scale; 1 = a random direction's share."""
    shown = [r for r in records if r.get("placement")]
    with paper_style():
        fig = new_figure(DOUBLE_COLUMN_IN, 2.8)
        axes = fig.subplots(1, 2, sharey=True)
        for ax, where, title in zip(
            axes, ("top", "bottom"), ("W₀'s top-k directions", "W₀'s bottom-k directions"), strict=True
        ):
            for i, module in enumerate(MODULES):
                xs, ys = [], []
                for x, r in enumerate(shown):
                    found = r["placement"]["modules"].get(module)
                    value = None if not found else over_chance(found, "left", where)
                    if value:
                        xs.append(x + (i - (len(MODULES) - 1) / 2) * 0.09)
                        ys.append(value)
                ax.scatter(
                    xs,
                    ys,
                    s=12,
                    color=run_color(i),
                    marker=run_marker(i),
                    label=short_module(module),
                    zorder=3,
                )
            ax.axhline(1.0, color="0.5", linewidth=0.7, linestyle="--", zorder=1)
            ax.set_yscale("log")
            ax.set_xticks(range(len(shown)), [label(r["method"]) for r in shown], rotation=45, ha="right")
            ax.set_title(title)
        axes[0].set_ylabel("share of ‖ΔW‖² ÷ chance k/d\n(k = ΔW's r₀.₉, output side)")
        plain_log_axis(axes[0].yaxis)
        handles, names = axes[0].get_legend_handles_labels()
        fig.legend(handles, names, loc="outside right center", title="module")
        save_figure(fig, results, PLACEMENT_FIGURE, ("png",))
