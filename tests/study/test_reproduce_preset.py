"""`deltarank reproduce` is the study preset `quick`: one pipeline, end to end on a tiny model (6 steps, r = 2),
and `deltarank study` of the same study file writes the same summary.json. A slow test runs SmolLM2-135M."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from deltarank.cli import main
from deltarank.io.run_directory import RunDirectory
from deltarank.study.design.reproduce_preset import reproduction_study
from tests.study.tiny_study import one_thread, tiny_lm

__all__ = ["one_thread", "tiny_lm"]

STEPS, R = 6, 2
MODULES = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
# what measures the machine, not the runs: left out when two summaries are compared
TIMINGS = ("train_seconds", "wall_seconds", "tokens_per_second", "peak_memory_bytes")


def reproduce_args(model: Path, out: Path, *extra: str) -> list[str]:
    return ["reproduce", "--model", str(model), "--max-steps", str(STEPS), "--lora-rank", str(R),
            "--device", "cpu", "-o", str(out), *extra]  # fmt: skip


@pytest.fixture(scope="module")
def tiny_run(tiny_lm: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path, str]:
    """One tiny reproduction through the command line: its summary.json, directory and closing line."""
    out = tmp_path_factory.mktemp("reproduce") / "out"
    result = CliRunner().invoke(main, reproduce_args(tiny_lm, out))
    assert result.exit_code == 0, result.output
    return json.loads((out / "summary.json").read_text()), out, result.stdout


def without_timings(summary: dict[str, Any]) -> dict[str, Any]:
    found = json.loads(json.dumps(summary))
    found.pop("elapsed_s", None)
    for cost in found["cost"].values():
        for key in TIMINGS:
            cost.pop(key, None)
    return found


def test_summary_has_the_agreed_layout(tiny_run: tuple[dict[str, Any], Path, str]) -> None:
    summary, out, _ = tiny_run
    assert summary["schema"] == "deltarank.reproduce/1"
    assert (summary["lora_r"], summary["domain"], summary["quick"]) == (R, "code", True)
    assert set(summary["modules"]) == MODULES
    for row in summary["modules"].values():
        assert row["lora_energy_90_median"] <= R  # a rank-r adapter cannot need more than r
        assert row["full_over_lora_r"] == pytest.approx(row["full_energy_90_median"] / R)
    study = json.loads((out / "study.json").read_text())
    rows = {r["name"]: r for r in study["runs"]}
    base = study["bases"][rows["full"]["base"]]
    # the summary is a view of study.json: the same numbers, nothing measured twice
    assert summary["learning"] == {
        "base": base["learning"]["held_out_loss"],
        **{m: rows[m]["learning"]["held_out_loss"] for m in ("full", "lora")},
    }
    assert summary["forgetting"] == {m: rows[m]["forgetting"]["general_loss_rise"] for m in ("full", "lora")}
    assert summary["forgetting"]["full"] == pytest.approx(
        rows["full"]["forgetting"]["general_loss"] - base["forgetting"]["general_loss"]
    )
    intervals = summary["intervals"]  # evaluation noise: paired bootstrap over the same sequences
    for m in ("full", "lora"):
        low, high = intervals["held_out_loss_change"][m]
        assert low <= rows[m]["learning"]["held_out_loss_change"] <= high
        low, high = intervals["forgetting"][m]
        assert low <= summary["forgetting"][m] <= high
    between = intervals["full_minus_lora_held_out_loss"]
    assert between["estimate"] == pytest.approx(
        summary["learning"]["full"] - summary["learning"]["lora"], abs=1e-6
    )
    assert between["sequences"] == rows["full"]["learning"]["held_out_sequences"]
    assert "per_sequence" not in (out / "study.csv").read_text()  # each sequence's losses stay in study.json
    assert summary["cost"]["full"]["steps"] == STEPS
    assert (
        summary["cost"]["full"]["parameters"]["trainable"]
        > summary["cost"]["lora"]["parameters"]["trainable"]
    )


def test_module_table_and_headline_are_recomputed_from_the_kept_spectra(
    tiny_run: tuple[dict[str, Any], Path, str],
) -> None:
    summary, out, stdout = tiny_run
    finals = {
        m: json.loads((out / "spectra" / f"{m}.json").read_text())["matrices"] for m in ("full", "lora")
    }

    def e90(method: str, module: str) -> float:
        return statistics.median(m["ranks"]["energy_90"] for m in finals[method] if m["module"] == module)

    for module, row in summary["modules"].items():
        assert (row["full_energy_90_median"], row["lora_energy_90_median"]) == (
            e90("full", module),
            e90("lora", module),
        )
    mlp = statistics.median(e90("full", m) / R for m in ("gate_proj", "up_proj", "down_proj"))
    every = statistics.median(e90("full", m) / R for m in MODULES)
    head = summary["headline"]
    assert head["mlp_full_energy_90_over_lora_r"] == pytest.approx(mlp)
    assert head["all_modules_full_energy_90_over_lora_r"] == pytest.approx(every)
    assert f"MLP {mlp:.1f}×" in stdout and f"all modules {every:.1f}×" in stdout
    assert f"rank claim (10–100×) {head['verdict']};" in stdout
    report = (out / "report.md").read_text()
    assert f"MLP {mlp:.1f}×" in report and f"verdict **{head['verdict']}**" in report


def test_every_checkpoint_is_a_point_with_a_kept_spectrum(tiny_run: tuple[dict[str, Any], Path, str]) -> None:
    summary, out, _ = tiny_run
    steps = {m: [s for s, _ in RunDirectory(out / m).steps(STEPS)] for m in ("full", "lora")}
    assert steps["full"] == [2, 4, 6]  # a checkpoint every max_steps // 3, the final weights at step 6
    assert [(p["run"], p["step"]) for p in summary["points"]] == [
        *(("full", s) for s in steps["full"]),
        *(("lora", s) for s in steps["lora"]),
    ]
    for method, found in steps.items():
        for step in found:
            spectrum = json.loads((out / "spectra" / f"{method}-step{step}.json").read_text())
            assert spectrum["tuned"].endswith(f"checkpoint-{step}" if step < STEPS else method)


def test_figures_and_subspace_are_written(tiny_run: tuple[dict[str, Any], Path, str]) -> None:
    summary, out, _ = tiny_run
    for name in ("headline", "spectra", "ranks_by_layer", "rank_over_training", "learning_forgetting"):
        assert (out / "figures" / f"{name}.png").stat().st_size > 1000
    for method in ("full", "lora"):  # intruders counted again from the stored max |cos| at the run's ε
        intruders = json.loads((out / f"intruders-{method}.json").read_text())
        counted = sum(sum(c < intruders["epsilon"] for c in m["max_cos"]) for m in intruders["matrices"])
        assert summary["subspace"][f"intruders_{method}_total"] == counted
        assert summary["subspace"][f"intruders_{method}_per_matrix"] == pytest.approx(
            counted / len(intruders["matrices"])
        )
    assert set(summary["subspace"]["phi_full_vs_lora_top16"]) <= MODULES
    assert (out / "similarity-full-lora.json").is_file()


def test_plot_redraws_every_figure_from_the_study_alone(
    tiny_run: tuple[dict[str, Any], Path, str], tmp_path: Path
) -> None:
    _, out, _ = tiny_run
    figures = tmp_path / "figures"
    result = CliRunner().invoke(
        main, ["plot", str(out / "study.json"), "-o", str(figures), "--format", "png"]
    )
    assert result.exit_code == 0, result.output
    drawn = {p.name for p in figures.iterdir()}
    kept = {p.name for p in (out / "figures").glob("*.png")}
    assert drawn == kept  # the study's own figures, and those of its kept spectra and summary
    assert {"spectra.png", "rank_over_training.png", "learning_forgetting.png"} <= drawn
    assert any(name.startswith("study_") for name in drawn)


def test_a_rerun_measures_nothing_again(tiny_run: tuple[dict[str, Any], Path, str], tiny_lm: Path) -> None:
    summary, out, _ = tiny_run
    result = CliRunner().invoke(main, reproduce_args(tiny_lm, out, "--resume"))
    assert result.exit_code == 0, result.output
    assert result.stderr.count("done already, skipping") == 2
    assert "measuring" not in result.stderr and "[subspace]" not in result.stderr
    assert without_timings(json.loads((out / "summary.json").read_text())) == without_timings(summary)


def test_a_rerun_without_resume_or_force_is_refused(
    tiny_run: tuple[dict[str, Any], Path, str], tiny_lm: Path
) -> None:
    _, out, _ = tiny_run
    result = CliRunner().invoke(main, reproduce_args(tiny_lm, out))
    assert result.exit_code == 1 and "--resume" in result.stderr and "--force" in result.stderr


def test_the_same_study_run_by_deltarank_study_writes_the_same_summary(
    tiny_run: tuple[dict[str, Any], Path, str], tiny_lm: Path, tmp_path: Path
) -> None:
    summary, _, _ = tiny_run
    file = tmp_path / "quick.yaml"
    raw = reproduction_study(model=str(tiny_lm), lora_r=R, max_steps=STEPS)
    file.write_text(yaml.safe_dump(raw))
    out = tmp_path / "study"
    result = CliRunner().invoke(main, ["study", str(file), "-o", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert without_timings(json.loads((out / "summary.json").read_text())) == without_timings(summary)


@pytest.mark.slow
@pytest.mark.usefixtures("smollm2_gguf")
def test_reproduce_runs_on_the_real_model(tmp_path: Path) -> None:
    """A few steps on SmolLM2-135M: catches a broken GGUF loader or name mapping end to end."""
    out = tmp_path / "repro"
    args = ["reproduce", "-o", str(out), "--max-steps", "2", "--no-subspace", "--device", "cpu"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["modules"]["up_proj"]["dim"] == 576  # SmolLM2-135M: hidden 576, MLP 1536
    assert summary["modules"]["k_proj"]["dim"] == 192  # 3 KV heads of 64
    full = json.loads((out / "spectra" / "full.json").read_text())
    assert len(full["matrices"]) == 30 * 7
    assert {m["base_dtype"] for m in full["matrices"]} <= {"Q4_1", "Q8_0", "F32"}
    assert all(m["tuned_dtype"] == "F32" for m in full["matrices"])
    assert all(m["delta_norm"] > 0 for m in full["matrices"])  # full fine-tuning moves every projection
    claim = summary["headline"]["rank_claim"]
    assert "MLP " in result.stdout and "all modules " in result.stdout
    assert f"rank claim (10–100×) {claim['verdict']};" in result.stdout
    assert not (out / "intruders-full.json").exists()  # --no-subspace
