"""The reproduction pipeline end to end: on a tiny model (fast) and on the real SmolLM2-135M (slow)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
from click.testing import CliRunner

from deltarank.cli import main
from deltarank.reproduce.pipeline import ReproduceConfig, checkpoints, reproduce
from tests.train.conftest import save_tiny_model

TINY_STEPS = 6
TINY_R = 2


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path, list[str]]:
    """One tiny reproduction (6 steps, r = 2) and the stage lines it printed."""
    root = tmp_path_factory.mktemp("reproduce")
    model = save_tiny_model(root / "model")
    config = ReproduceConfig(
        out_dir=root / "out", model=str(model), lora_r=TINY_R, max_steps=TINY_STEPS, device="cpu"
    )
    lines: list[str] = []
    summary = reproduce(config, echo=lines.append)
    return summary, config.out_dir, lines


def test_summary_has_the_agreed_layout(tiny_run: tuple[dict, Path, list[str]]) -> None:
    _, out, _ = tiny_run
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["schema"] == "deltarank.reproduce/1"
    assert on_disk["lora_r"] == TINY_R
    assert set(on_disk["modules"]) == {
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    }
    for row in on_disk["modules"].values():
        assert {"full_energy_90_median", "lora_energy_90_median", "dim"} <= set(row)
        assert row["lora_energy_90_median"] <= TINY_R  # a rank-r adapter cannot need more than r
        assert row["full_over_lora_r"] == pytest.approx(row["full_energy_90_median"] / TINY_R)
    assert set(on_disk["learning"]) == {"base", "full", "lora"}
    assert set(on_disk["forgetting"]) == {"full", "lora"}
    assert on_disk["forgetting"]["full"] == pytest.approx(
        on_disk["points"][-1 - len(checkpoints(out / "lora"))]["general_loss"]
        - on_disk["base"]["general_loss"]
    )
    assert on_disk["cost"]["full"]["steps"] == TINY_STEPS
    assert (
        on_disk["cost"]["full"]["parameters"]["trainable"]
        > on_disk["cost"]["lora"]["parameters"]["trainable"]
    )


def test_module_table_and_headline_are_recomputed_from_the_spectrum_files(
    tiny_run: tuple[dict, Path, list[str]],
) -> None:
    # The summary's numbers, derived again from the final checkpoints' records with statistics.median.
    summary, out, _ = tiny_run
    finals = {
        m: json.loads((out / "spectra" / f"{m}.json").read_text())["matrices"] for m in ("full", "lora")
    }

    def e90_median(method: str, module: str) -> float:
        return statistics.median(m["ranks"]["energy_90"] for m in finals[method] if m["module"] == module)

    for module, row in summary["modules"].items():
        assert row["full_energy_90_median"] == e90_median("full", module)
        assert row["lora_energy_90_median"] == e90_median("lora", module)
        assert row["full_over_lora_r"] == pytest.approx(e90_median("full", module) / TINY_R)
    ratio = statistics.median(e90_median("full", m) / TINY_R for m in ("gate_proj", "up_proj", "down_proj"))
    every = statistics.median(e90_median("full", m) / TINY_R for m in summary["modules"])
    head = summary["headline"]
    assert head["mlp_full_energy_90_over_lora_r"] == pytest.approx(ratio)
    assert head["all_modules_full_energy_90_over_lora_r"] == pytest.approx(every)
    assert head["holds"] == (10 <= ratio <= 100)
    inside = {10 <= ratio <= 100, 10 <= every <= 100}
    assert head["verdict"] == (
        "view-dependent" if len(inside) == 2 else ("supported" if True in inside else "not supported")
    )


def test_every_checkpoint_is_a_point_and_has_a_spectrum(tiny_run: tuple[dict, Path, list[str]]) -> None:
    summary, out, _ = tiny_run
    steps = {m: [s for s, _ in checkpoints(out / m)] for m in ("full", "lora")}
    assert steps["full"] == [2, 4, 6]  # save every max_steps // 3, the final weights at step 6
    assert [(p["run"], p["step"]) for p in summary["points"]] == [
        *(("full", s) for s in steps["full"]),
        *(("lora", s) for s in steps["lora"]),
    ]
    for method, found in steps.items():
        for step in found:
            assert (out / "spectra" / f"{method}-step{step}.json").is_file()


def test_report_figures_and_subspace_are_written(tiny_run: tuple[dict, Path, list[str]]) -> None:
    summary, out, _ = tiny_run
    report = (out / "report.md").read_text()
    assert "full ÷ r" in report and "forgetting" in report
    for name in ("headline", "spectra", "ranks_by_layer", "rank_over_training", "learning_forgetting"):
        assert (out / "figures" / f"{name}.png").stat().st_size > 1000
    # Intruders counted again from the stored max |cos| at the run's ε (not from the stored counts).
    for method in ("full", "lora"):
        intruders = json.loads((out / f"intruders-{method}.json").read_text())
        counted = sum(sum(c < intruders["epsilon"] for c in m["max_cos"]) for m in intruders["matrices"])
        assert summary["subspace"][f"intruders_{method}_total"] == counted
        assert summary["subspace"][f"intruders_{method}_per_matrix"] == pytest.approx(
            counted / len(intruders["matrices"])
        )
    assert set(summary["subspace"]["phi_full_vs_lora_top16"]) <= set(summary["modules"])


def test_a_rerun_skips_finished_stages(tiny_run: tuple[dict, Path, list[str]]) -> None:
    _, out, _ = tiny_run
    config = ReproduceConfig(
        out_dir=out, model=str(out.parent / "model"), lora_r=TINY_R, max_steps=TINY_STEPS, device="cpu"
    )
    lines: list[str] = []
    reproduce(config, echo=lines.append)
    skipped = [line for line in lines if "done already" in line]
    assert len(skipped) == 5  # train full, train lora, spectrum full, spectrum lora, subspace
    assert not any(line.startswith("[evaluate]") for line in lines)


@pytest.mark.slow
@pytest.mark.usefixtures("smollm2_gguf")
def test_reproduce_runs_on_the_real_model(tmp_path: Path) -> None:
    """A few steps on SmolLM2-135M: catches a broken GGUF loader or name mapping end to end."""
    out = tmp_path / "repro"
    result = CliRunner().invoke(
        main, ["reproduce", "-o", str(out), "--max-steps", "2", "--no-subspace", "--device", "cpu"]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["modules"]["up_proj"]["dim"] == 576  # SmolLM2-135M: hidden 576, MLP 1536
    assert summary["modules"]["k_proj"]["dim"] == 192  # 3 KV heads of 64
    full = json.loads((out / "spectra" / "full.json").read_text())
    assert len(full["matrices"]) == 30 * 7
    assert {m["base_dtype"] for m in full["matrices"]} <= {"Q4_1", "Q8_0", "F32"}
    assert all(m["tuned_dtype"] == "F32" for m in full["matrices"])
    assert all(m["delta_norm"] > 0 for m in full["matrices"])  # full fine-tuning moves every projection
    claim = summary["headline"]["rank_claim"]  # the closing line shows both views and the one verdict
    assert "MLP " in result.stdout and "all modules " in result.stdout
    assert f"rank claim (10–100×) {claim['verdict']};" in result.stdout
    head = summary["headline"]  # 2 steps cannot show the 10–100× claim; its flag must match its ratio
    assert head["holds"] == (10 <= head["mlp_full_energy_90_over_lora_r"] <= 100)
