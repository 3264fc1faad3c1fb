"""report.md of a study, from study.json alone: the runs, the seed groups, what is within noise, the claims.

Sections: the table of runs (coordinates, learning, forgetting, diversity, cost, the median ΔW energy_90 and,
when measured, k₉₀ func), ΔW ranks per module type, r0.9 above the self-sample and seed nulls, the functional
rank (`deltarank.study.report.functional_rank`), the placement of ΔW among W₀'s singular directions, the
merge geometry of the runs (`deltarank.study.report.merge`) and the runs with their intruders mitigated
(`deltarank.study.report.mitigation`) (each when measured), seed groups with 95% intervals, the differences between groups that differ in one
coordinate (within noise or not) and the reference claims that apply (`deltarank.study.claims.reference`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from deltarank.evaluation.drift import BELOW_ZERO, BELOW_ZERO_WHY, below_zero
from deltarank.figures.study_rows import bases, rank_summary
from deltarank.io.atomic import write_atomic
from deltarank.study.claims.reference import check_claims
from deltarank.study.claims.statistics import compare, flatten_metrics
from deltarank.study.report.cells import fmt, forgetting_cell
from deltarank.study.report.figures import FIGURES_DIR
from deltarank.study.report.functional_rank import functional_rank_table, k90_cell
from deltarank.study.report.merge import INTRO as MERGE_INTRO
from deltarank.study.report.merge import merge_notes, merge_tables
from deltarank.study.report.mitigation import INTRO as MITIGATION_INTRO
from deltarank.study.report.mitigation import mitigation_table
from deltarank.study.report.recommended_ranks import evidence_section

# (column header, section, key, format) of the runs table; a column shows when any run (or the base) has it.
RUN_COLUMNS: tuple[tuple[str, str, str, str], ...] = (
    ("held-out loss", "learning", "held_out_loss", ".4f"),
    ("Δ loss", "learning", "held_out_loss_change", "+.4f"),
    ("accuracy", "learning", "accuracy", ".1%"),
    ("forgetting", "forgetting", "general_loss_rise", "+.4f"),
    ("distinct / prompt", "diversity", "distinct_per_prompt", ".2f"),
    ("distinct (ws) / prompt", "diversity", "distinct_per_prompt_normalised", ".2f"),
    ("distinct-2", "diversity", "distinct_2", ".3f"),
    ("pass rate", "diversity", "pass_rate", ".1%"),
    ("trainable params", "cost", "trainable_parameters", ","),
    ("trainable share", "cost", "trainable_share", ".3%"),
    ("tokens", "cost", "tokens", ","),
    ("train s", "cost", "train_seconds", ".1f"),
    ("device-s", "cost", "device_seconds", ".1f"),
    ("peak MiB", "cost", "peak_memory_bytes", "mib"),
    ("stored MiB", "cost", "stored_bytes", "mib"),
)
# The metrics the groups table and the noise comparisons show.
GROUP_METRICS = (
    ("held-out loss", "learning.held_out_loss", ".4f"),
    ("accuracy", "learning.accuracy", ".1%"),
    ("forgetting", "forgetting.general_loss_rise", "+.4f"),
    ("distinct / prompt", "diversity.distinct_per_prompt", ".2f"),
)


def write_report(study: Mapping[str, Any], path: Path, summary: Mapping[str, Any] | None = None) -> None:
    """Write report.md for a study.json document (atomically), with a reproduction's section when the study
    is one (`summary`: its summary.json)."""
    write_atomic(path, render_report(study, summary))


def render_report(study: Mapping[str, Any], summary: Mapping[str, Any] | None = None) -> str:
    """report.md's text (a reproduction's section first, when `summary` is given)."""
    info = study.get("study") or {}
    runs = list(study.get("runs") or [])
    lines = [f"# deltarank study: {info.get('name', 'study')}", ""]
    if info.get("description"):
        lines += [str(info["description"]), ""]
    lines += [
        f"{len(runs)} runs. Learning: held-out loss per trained token (Δ: against the base model) and exact-match "
        "accuracy where the data has closed answers; forgetting: KL(base‖tuned), nats/token, estimated as the rise "
        "of the loss on the base model's own samples (T = 1, untruncated) to general prompts; diversity: distinct output strings per prompt (ws: after whitespace normalisation) "
        "and distinct-2 (distinct / all whitespace-token bigrams); device-s: training seconds × devices.",
        "",
    ]
    if summary is not None:
        from deltarank.study.report.summary import summary_section

        lines += [*summary_section(summary), ""]
    lines += _coverage_section(info)
    lines += _claims_section(study)
    lines += _runs_section(study, runs)
    lines += evidence_section(runs)
    lines += _ranks_section(runs)
    lines += _functional_rank_section(runs)
    lines += _placement_section(runs)
    lines += _merge_section(study)
    lines += _mitigation_section(runs)
    lines += _seed_null_section(study, runs)
    lines += _nulls_section(runs)
    lines += _groups_section(list(study.get("groups") or []))
    lines += _noise_section(runs)
    return "\n".join(lines).rstrip() + "\n"


def _coverage_section(info: Mapping[str, Any]) -> list[str]:
    """The held-out parts split from training files and what the study does not measure (study.json's
    `study.held_out_splits` and `study.not_measured`)."""
    lines = []
    for split in info.get("held_out_splits") or []:
        lines.append(
            f"Held-out set: {split['held_out_examples']} of the {split['examples']} examples of {split['source']} "
            f"(seed {split['seed']}), never trained on: the runs train on the other {split['train_examples']}."
        )
    missing = list(info.get("not_measured") or [])
    if missing:
        lines.append("Not measured: " + "; ".join(missing) + ".")
    return [line for text in lines for line in (text, "")]


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], numeric_from: int) -> list[str]:
    align = ["---" if i < numeric_from else "---:" for i in range(len(header))]
    out = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    return out + ["| " + " | ".join(row) + " |" for row in rows]


def _coordinate_keys(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    return list(dict.fromkeys(k for r in runs for k in (r.get("coordinates") or {})))


def _runs_section(study: Mapping[str, Any], runs: Sequence[Mapping[str, Any]]) -> list[str]:
    every_base = bases(study)
    keys = _coordinate_keys(runs)
    base_rows = {id(m): ("base" if len(every_base) == 1 else f"base {k}") for k, m in every_base.items()}
    everyone = [*every_base.values(), *runs]
    columns = [c for c in RUN_COLUMNS if any((r.get(c[1]) or {}).get(c[2]) is not None for r in everyone)]
    extra = list(dict.fromkeys(k for r in runs for k in (r.get("forgetting") or {}) if k.startswith("rise:")))
    header = ["run", *keys, *(c[0] for c in columns), *(f"forgetting {k[5:]}" for k in extra), "ΔW energy_90"]
    functional = any("k90" in (r.get("functional_rank") or {}) for r in runs)
    header += ["k₉₀ func"] if functional else []
    rows = []
    for row in everyone:
        is_base = id(row) in base_rows
        coordinates = row.get("coordinates") or {}
        cells = [base_rows[id(row)] if is_base else str(row.get("name"))]
        cells += ["" if is_base else str(coordinates.get(k, "")) for k in keys]
        cells += [_cell(row, sec, key, spec) for _, sec, key, spec in columns]
        cells += [fmt((row.get("forgetting") or {}).get(k), "+.4f") for k in extra]
        cells.append("" if is_base else fmt(rank_summary(row), "g"))
        cells += [k90_cell(row)] if functional else []
        rows.append(cells)
    below = any(below_zero((r.get("forgetting") or {}).get("general_loss_rise_ci95")) for r in runs)
    note = [f"Forgetting {BELOW_ZERO}: {BELOW_ZERO_WHY}.", ""] if below else []
    return ["## Runs", "", *_table(header, rows, 1 + len(keys)), "", *note]


def _cell(row: Mapping[str, Any], section: str, key: str, spec: str) -> str:
    """One cell of the runs table (forgetting: `forgetting_cell`, with its interval)."""
    values = row.get(section) or {}
    if key == "general_loss_rise":
        return forgetting_cell(values.get(key), values.get("general_loss_rise_ci95"))
    return fmt(values.get(key), spec)


def _ranks_section(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    modules = list(dict.fromkeys(m for r in runs for m in (r.get("ranks") or {})))
    if not modules:
        return []
    rows = []
    for run in runs:
        ranks = run.get("ranks") or {}
        cells = [str(run.get("name"))]
        for module in modules:
            m = ranks.get(module) or {}
            cells.append(f"{fmt(m.get('energy_90_median'), 'g')} / {fmt(m.get('noise_floor_median'), 'g')}")
        if not ranks and run.get("ranks_note"):
            cells = [cells[0], *(["–"] * len(modules))]
        rows.append(cells)
    notes = [f"- {r.get('name')}: {r['ranks_note']}" for r in runs if r.get("ranks_note")]
    return [
        "## ΔW ranks per module type",
        "",
        "Median over layers of energy_90 / of the noise-floor rank of ΔW.",
        "",
        *_table(["run", *modules], rows, 1),
        "",
        *notes,
        *([""] if notes else []),
    ]


def _functional_rank_section(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    """The shares of learning and drift the top k directions of every ΔW keep (`functional_rank_table`)."""
    found = functional_rank_table(runs)
    if found is None:
        return []
    notes, header, rows = found
    return ["## Functional rank", "", *notes, "", *_table(header, rows, 1), ""]


def _placement_section(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    """Per run and module type, where ΔW lands among W₀'s singular directions (study.json `placement`,
    measured with `evaluate: {placement: true}`): median shares at k = r₀.₉ beside their chance level."""
    rows = [
        [str(run.get("name")), module, fmt(m.get("k_median"), "g"), *_placement_cells(m)]
        for run in runs
        for module, m in (run.get("placement") or {}).items()
    ]
    if not rows:
        return []
    return [
        "## Placement",
        "",
        "Median over layers, at k = r0.9 of ΔW, of the share of ‖ΔW‖²_F in W₀'s top-k and bottom-k left (L) and "
        "right (R) singular directions, with its chance level k/d in brackets (what a ΔW with no preferred "
        "direction gets): the run's placement.json (`deltarank placement`).",
        "",
        *_table(["run", "module", "k", "top-k L", "bottom-k L", "top-k R", "bottom-k R"], rows, 2),
        "",
    ]


def _merge_section(study: Mapping[str, Any]) -> list[str]:
    """The merge geometry of the runs against each base (study.json `subspace.merge`, measured with
    `evaluate: {merge: true}`): per module type its means, and the heatmaps (DIR/figures/)."""
    merge = (study.get("subspace") or {}).get("merge")
    if not isinstance(merge, Mapping):
        return []
    lines = ["## Merge geometry", "", MERGE_INTRO, ""]
    for caption, header, rows, figure in merge_tables(merge):
        lines += [caption, "", *_table(header, rows, 1), ""]
        lines += [f"![merge geometry: {caption.split(' (')[0]}]({FIGURES_DIR}/{figure}.png)", ""]
    notes = merge_notes(merge)
    return lines + notes + ([""] if notes else [])


def _mitigation_section(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    """Each run beside its intruder-mitigated model (`mitigation_table`)."""
    found = mitigation_table(runs)
    if found is None:
        return []
    notes, header, rows = found
    table = [*_table(header, rows, 1), ""] if rows else []
    return ["## Intruder mitigation", "", MITIGATION_INTRO, "", *table, *notes, *([""] if notes else [])]


def _placement_cells(medians: Mapping[str, Any]) -> list[str]:
    """`0.812 (0.031)` per side and share: the median share and the median chance level beside it."""
    cells = []
    for side in ("left", "right"):
        chance = fmt(medians.get(f"{side}_chance_median"), ".3f")
        cells += [
            f"{fmt(medians.get(f'{side}_{share}_median'), '.3f')} ({chance})" for share in ("top", "bottom")
        ]
    return cells


def _seed_null_section(study: Mapping[str, Any], runs: Sequence[Mapping[str, Any]]) -> list[str]:
    """The seed nulls (study.json `subspace.seed_null`): per module type the energy_90 of W_a − W_b of two
    runs that differ only in seed, and each of the two runs' own energy_90 as a multiple of it."""
    nulls = (study.get("subspace") or {}).get("seed_null") or []
    if not nulls:
        return []
    by_name = {str(r.get("name")): r for r in runs}
    lines = [
        "## Seed null",
        "",
        "energy_90 of W_a − W_b for runs that differ only in seed (median over layers): the rank training noise "
        "alone reaches. Each run's own energy_90 ÷ the null's: near 1 means its ΔW is no more structured than "
        "the difference between two seeds. cos(ΔW_a, ΔW_b): the share of direction the two seeds' deltas have in "
        "common (median over layers; 1 − cos of each ΔW's energy is seed-specific).",
        "",
    ]
    for null in nulls:
        a, b = null["runs"]
        modules = list(null["energy_90_median"])
        rows = []
        for module in modules:
            base = null["energy_90_median"][module]
            cells = [module, fmt(base, "g")]
            for name in (a, b):
                cells.append(fmt(_null_ratio(by_name.get(name) or {}, "seed", module), ".2f"))
            cells.append(fmt((null.get("cosine_median") or {}).get(module), ".2f"))
            rows.append(cells)
        header = ["module", "null energy_90", f"{a} ÷ null", f"{b} ÷ null", "cos(ΔW_a, ΔW_b)"]
        lines += [f"{a} vs {b}:", "", *_table(header, rows, 1), ""]
    return lines


def _null_ratio(run: Mapping[str, Any], kind: str, module: str) -> float | None:
    """A run's energy_90 ÷ its null's of `kind` for one module type (study.json `runs[].nulls`), or None."""
    for null in run.get("nulls") or []:
        if null.get("kind") == kind:
            return ((null.get("modules") or {}).get(module) or {}).get("ratio")
    return None


def _nulls_section(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    """Each run's r0.9 against its nulls (study.json `runs[].nulls`): per module type, run ÷ null (run / null)."""
    listed = [(run, null) for run in runs for null in run.get("nulls") or []]
    if not listed:
        return []
    modules = list(dict.fromkeys(m for _, null in listed for m in null.get("modules") or {}))
    rows = []
    for run, null in listed:
        kind, source = null.get("kind"), null.get("null")
        label = f"seed: {' − '.join(source)}" if kind == "seed" else f"self-sample: {source}"
        cells = [str(run.get("name")), label]
        for module in modules:
            value = (null.get("modules") or {}).get(module) or {}
            own, noise = value.get("run_energy_90"), value.get("null_energy_90")
            cells.append(f"{fmt(value.get('ratio'), '.2f')} ({fmt(own, 'g')}/{fmt(noise, 'g')})")
        rows.append(cells)
    return [
        "## r0.9 above the nulls",
        "",
        "Per module type, a run's energy_90 ÷ its null's (the two medians over layers in brackets). Self-sample "
        "null: the run's settings trained on the base model's own T = 1 samples (builtin:self-samples), where "
        "fine-tuning learns nothing in expectation, so its ΔW is optimizer and mini-batch noise; seed null: "
        "W_a − W_b of two seeds. Near 1: the ΔW needs no more directions than noise at its settings.",
        "",
        *_table(["run", "null", *modules], rows, 2),
        "",
    ]


def _groups_section(groups: Sequence[Mapping[str, Any]]) -> list[str]:
    if not any(int(g.get("n", 1)) > 1 for g in groups):
        return [
            "## Repeated seeds",
            "",
            "Every setting ran with one seed: no confidence intervals, and no difference between runs can be told "
            "apart from seed-to-seed noise.",
            "",
        ]
    keys = list(dict.fromkeys(k for g in groups for k in (g.get("coordinates") or {})))
    shown = [m for m in GROUP_METRICS if any(m[1] in (g.get("metrics") or {}) for g in groups)]
    rows = []
    for group in groups:
        metrics = group.get("metrics") or {}
        cells = [str((group.get("coordinates") or {}).get(k, "")) for k in keys] + [str(group.get("n"))]
        for _, key, spec in shown:
            cells.append(_interval(metrics.get(key), spec))
        rows.append(cells)
    return [
        "## Repeated seeds (mean ± 95% t interval)",
        "",
        *_table([*keys, "n", *(m[0] for m in shown)], rows, len(keys)),
        "",
    ]


def _interval(metric: Mapping[str, Any] | None, spec: str) -> str:
    if not metric or metric.get("mean") is None:
        return "–"
    if metric.get("ci95_low") is None:
        return fmt(metric["mean"], spec)
    half = (metric["ci95_high"] - metric["ci95_low"]) / 2
    return f"{fmt(metric['mean'], spec)} ± {fmt(half, spec.lstrip('+'))}"


def _noise_section(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    """Groups of two or more seeds that differ in one coordinate, compared metric by metric (Welch's 95%
    interval); with one seed there is nothing to say (the repeated-seeds section says so)."""
    seeds: dict[str, list[Mapping[str, Any]]] = {}
    labels: dict[str, dict[str, Any]] = {}
    for run in runs:
        coordinates = {k: v for k, v in (run.get("coordinates") or {}).items() if k != "seed"}
        key = repr(sorted((k, str(v)) for k, v in coordinates.items())) + str(run.get("from"))
        seeds.setdefault(key, []).append(run)
        labels[key] = coordinates
    keys = list(seeds)
    lines = []
    for i, a in enumerate(keys):
        for b in keys[i + 1 :]:
            differing = _one_difference(labels[a], labels[b])
            if differing is None or len(seeds[a]) < 2 or len(seeds[b]) < 2:
                continue
            flat_a = [flatten_metrics(r) for r in seeds[a]]
            flat_b = [flatten_metrics(r) for r in seeds[b]]
            for name, metric, spec in GROUP_METRICS:
                va = [f[metric] for f in flat_a if metric in f]
                vb = [f[metric] for f in flat_b if metric in f]
                if not va or not vb:
                    continue
                found = compare(va, vb)
                lines.append(_noise_line(differing, labels[a], labels[b], name, spec, found))
    if not lines:
        return []
    return [
        "## Differences (one coordinate changed)",
        "",
        "Difference of means with its 95% Welch interval; *within noise* when the interval contains 0.",
        "",
        *lines,
        "",
    ]


def _one_difference(a: Mapping[str, Any], b: Mapping[str, Any]) -> str | None:
    if set(a) != set(b):
        return None
    differing = [k for k in a if str(a[k]) != str(b[k])]
    return differing[0] if len(differing) == 1 else None


def _noise_line(
    key: str,
    a: Mapping[str, Any],
    b: Mapping[str, Any],
    name: str,
    spec: str,
    found: Mapping[str, Any],
) -> str:
    context = ", ".join(f"{k} {v}" for k, v in a.items() if k != key)
    head = f"- {key} {a[key]} − {b[key]}" + (f" ({context})" if context else "") + f", {name}: "
    diff = fmt(found["difference"], "+" + spec.lstrip("+"))
    if found["within_noise"] is None:
        return head + f"{diff}, unknown (n = {found['n_a']} and {found['n_b']})"
    verdict = "within noise" if found["within_noise"] else "differs"
    low, high = (fmt(found[k], spec.lstrip("+")) for k in ("ci95_low", "ci95_high"))
    return head + f"{diff} [{low}, {high}], {verdict} (n = {found['n_a']} and {found['n_b']})"


def _claims_section(study: Mapping[str, Any]) -> list[str]:
    claims = check_claims(study)
    if not claims:
        return []
    lines = ["## Reference claims", ""]
    for claim in claims:
        lines.append(
            f"- **{claim['claim']}** ({claim['source']}): **{claim['verdict']}**. {claim['evidence']}."
        )
    return [*lines, ""]
