"""The project's headline, computed by `build_summary` from spectrum results built by hand.

Headline: full fine-tuning's ΔW has 10–100× the LoRA rank r (`deltarank.analysis.results.rank_claim`). The
summary states it in two views, the median over gate/up/down_proj and over all module types of each module's
median full energy_90 ÷ r, with one verdict; the report prints both views and the verdict. The real-model test runs too few steps to show it, so it is checked here on
records with chosen energy_90 values.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deltarank.analysis.results import MatrixSpectrum, SpectrumResult
from deltarank.reproduce.config import ReproduceConfig
from deltarank.reproduce.summary import build_summary, write_report

STEPS = 10
# energy_90 per layer (0, 1, 2) of the final full fine-tuning checkpoint; medians: gate 44, up 38, down 60.
FULL_E90 = {
    "q_proj": (400, 300, 350),  # large, and not an MLP module: it must not enter the headline
    "gate_proj": (30, 50, 44),
    "up_proj": (36, 40, 38),
    "down_proj": (48, 100, 60),
}
LORA_E90 = {module: (3, 4, 4) for module in FULL_E90}  # median 4


def record(module: str, layer: int, energy_90: float | None) -> MatrixSpectrum:
    return MatrixSpectrum(
        name=f"model.layers.{layer}.{module}.weight",
        layer=layer,
        module=module,
        shape=(128, 256),
        kind="dense",
        singular_values=(1.0,),
        ranks={"energy_90": energy_90, "noise_floor": 1.0},
        delta_norm=1.0,
        base_norm=1.0,
        erased_fraction=0.0,
        random_energy_90=60,
        base_dtype="F32",
        tuned_dtype="F32",
    )


def result(values: dict[str, tuple[float | None, ...]]) -> SpectrumResult:
    return SpectrumResult(
        base="base",
        tuned="tuned",
        device="cpu",
        precision="float32",
        thresholds=(0.9,),
        matrices=tuple(
            record(module, layer, e90) for module, row in values.items() for layer, e90 in enumerate(row)
        ),
    )


def summarise(tmp_path: Path, lora_r: int, full: dict[str, tuple[float | None, ...]] = FULL_E90) -> dict:
    runs = {}
    for method in ("full", "lora"):
        runs[method] = tmp_path / method
        runs[method].mkdir()
        (runs[method] / "run.json").write_text(json.dumps({"steps": STEPS, "tokens_seen": 100 * STEPS}))
    losses = {"target_loss": 2.0, "general_loss": 3.0}
    evaluation = {"base": losses, f"full@{STEPS}": losses, f"lora@{STEPS}": losses}
    early = result({module: (1, 1, 1) for module in FULL_E90})  # an earlier checkpoint: must not be used
    spectra = {"full": [early, result(full)], "lora": [early, result(LORA_E90)]}
    config = ReproduceConfig(out_dir=tmp_path, lora_r=lora_r)
    return build_summary(config, runs, evaluation, spectra, {})


@pytest.mark.parametrize(
    ("lora_r", "mlp", "all_modules", "holds", "verdict"),
    [
        # MLP: median(44/4, 38/4, 60/4) = median(11, 9.5, 15); all four types: median(44, 38, 60, 350) = 52
        (4, 11.0, 13.0, True, "supported"),
        (5, 8.8, 10.4, False, "view-dependent"),  # MLP below 10×, all modules inside 10–100×
    ],
)
def test_headline_shows_the_mlp_and_all_module_views_and_one_verdict(
    tmp_path: Path, lora_r: int, mlp: float, all_modules: float, holds: bool, verdict: str
) -> None:
    summary = summarise(tmp_path, lora_r)
    head = summary["headline"]
    assert head["mlp_full_energy_90_over_lora_r"] == pytest.approx(mlp)
    assert head["all_modules_full_energy_90_over_lora_r"] == pytest.approx(all_modules)
    assert (head["holds"], head["verdict"]) == (holds, verdict)
    assert head["rank_claim"]["views"]["mlp"]["modules"] == 3
    assert head["rank_claim"]["views"]["all_modules"]["modules"] == 4
    up = summary["modules"]["up_proj"]
    assert (up["full_energy_90_median"], up["lora_energy_90_median"]) == (38, 4)
    assert up["full_over_lora_r"] == pytest.approx(38 / lora_r)
    assert summary["modules"]["q_proj"]["full_over_lora_r"] == pytest.approx(350 / lora_r)
    write_report(tmp_path / "report.md", summary)
    report = (tmp_path / "report.md").read_text()
    mlp_verdict = "supported" if holds else "not supported"
    assert (
        f"MLP {mlp:.1f}× ({mlp_verdict}), all modules {all_modules:.1f}× (supported) of r = {lora_r}"
        in report
    )
    assert f"verdict **{verdict}**" in report


def test_matrices_without_energy_90_are_left_out_of_the_medians(tmp_path: Path) -> None:
    full = {**FULL_E90, "gate_proj": (30, 50, None)}  # median of (30, 50) = 40, not of (30, 50, 0)
    summary = summarise(tmp_path, 4, full)
    assert summary["modules"]["gate_proj"]["full_energy_90_median"] == 40
    assert summary["headline"]["mlp_full_energy_90_over_lora_r"] == pytest.approx(10.0)  # (10, 9.5, 15)
    assert summary["headline"]["holds"] is True  # exactly 10 × r counts
