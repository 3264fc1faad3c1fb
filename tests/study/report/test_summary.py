"""A study with `reproduce: quick`: what it must hold, and its summary.json as a view of study.json.

Headline: full fine-tuning's ΔW has 10–100× the LoRA rank r (`deltarank.analysis.results.rank_claim`). The
summary states it in two views, the median over gate/up/down_proj and over all module types of each module's
median full energy_90 ÷ r, with one verdict; summary.json, the reproduction's section of report.md and the
study's claims section show the same views and verdict. Checked here on spectra with chosen energy_90 values
where the two views disagree (the tiny end-to-end runs are in test_reproduce_preset.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from deltarank.analysis.results import MatrixSpectrum, SpectrumResult
from deltarank.analysis.results.rank_claim import describe_width
from deltarank.errors import InputError, OutputError
from deltarank.io.atomic import write_json
from deltarank.study.design.study_file import parse_study
from deltarank.study.measure.spectra import rank_medians, spectrum_file
from deltarank.study.report.markdown import render_report
from deltarank.study.report.summary import build_summary

STEPS = 10
# energy_90 per layer (0, 1, 2) of the final full fine-tuning ΔW; medians: gate 44, up 38, down 60, q 350.
FULL_E90 = {
    "q_proj": (400, 300, 350),  # large, and not an MLP module: only the all-module view counts it
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


def spectrum(values: dict[str, tuple[float | None, ...]]) -> SpectrumResult:
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


def study_dir(
    tmp_path: Path, lora_r: int, full: dict[str, tuple[float | None, ...]] = FULL_E90
) -> dict[str, Any]:
    """A reproduction's study directory written by hand: run.json and kept spectra of both runs; returns its
    study.json document (rows ranked from the same spectra, as the study measures them)."""
    rows = []
    (tmp_path / "spectra").mkdir()
    for method, values in (("full", full), ("lora", LORA_E90)):
        (tmp_path / method).mkdir()
        write_json(
            tmp_path / method / "run.json", {"method": method, "steps": STEPS, "tokens_seen": 100 * STEPS}
        )
        result = spectrum(values)
        result.to_json(tmp_path / spectrum_file(method))
        rows.append(
            {
                "name": method,
                "coordinates": {"method": method},
                "base": "b",
                "settings": {
                    "method": method,
                    "data": "builtin:code",
                    "lora_r": lora_r if method == "lora" else None,
                },
                "learning": {"held_out_loss": 1.5 if method == "full" else 1.8},
                "forgetting": {"general_loss": 3.2, "general_loss_rise": 0.2 if method == "full" else 0.05},
                "cost": {"steps": STEPS, "tokens": 100 * STEPS},
                "ranks": rank_medians(result),
                "spectrum": spectrum_file(method),
            }
        )
    base = {"learning": {"held_out_loss": 2.0}, "forgetting": {"general_loss": 3.0}}
    return {"study": {"name": "quick", "file": {"reproduce": "quick"}}, "bases": {"b": base}, "runs": rows}


@pytest.mark.parametrize(
    ("lora_r", "mlp", "all_modules", "holds", "verdict"),
    [
        # MLP: median(44/4, 38/4, 60/4) = median(11, 9.5, 15); all four types: median(44, 38, 60, 350)/4 = 52/4
        (4, 11.0, 13.0, True, "consistent"),
        (5, 8.8, 10.4, False, "inconclusive"),  # MLP below 10×, all modules inside 10–100×
    ],
)
def test_every_report_shows_both_views_and_one_verdict(
    tmp_path: Path, lora_r: int, mlp: float, all_modules: float, holds: bool, verdict: str
) -> None:
    document = study_dir(tmp_path, lora_r)
    summary = build_summary(document, tmp_path)
    head = summary["headline"]
    assert head["mlp_full_energy_90_over_lora_r"] == pytest.approx(mlp)
    assert head["all_modules_full_energy_90_over_lora_r"] == pytest.approx(all_modules)
    assert (head["holds"], head["verdict"]) == (holds, verdict)
    assert head["rank_claim"]["views"]["mlp"]["modules"] == 3
    assert head["rank_claim"]["views"]["all_modules"]["modules"] == 4
    up = summary["modules"]["up_proj"]
    assert (up["full_energy_90_median"], up["lora_energy_90_median"]) == (38, 4)
    assert up["full_over_lora_r"] == pytest.approx(38 / lora_r)
    assert summary["learning"] == {"base": 2.0, "full": 1.5, "lora": 1.8}
    assert summary["forgetting"] == {"full": 0.2, "lora": 0.05}
    report = render_report(document, summary)
    views = f"MLP {mlp:.1f}× ({'consistent' if holds else 'inconsistent'}), all modules {all_modules:.1f}× (consistent)"
    assert report.count(views) == 2  # the reproduction's section and the study's claim check say it alike
    assert f"verdict **{verdict}**" in report
    claims = report[report.index("full fine-tuning's ΔW has 10–100× the rank of LoRA's") :]
    assert verdict in claims.splitlines()[0]
    # the width-aware scale: MLP median 44 of 128 columns = 34% (inside the paper's 3.9–39%), all modules
    # 52 of 128 = 41% (above it); the same sentence in the reproduction's section and the claim check
    width = summary["headline"]["width_claim"]
    assert summary["headline"]["mlp_full_energy_90_over_width"] == pytest.approx(44 / 128)
    assert summary["headline"]["all_modules_full_energy_90_over_width"] == pytest.approx(52 / 128)
    assert (width["verdict"], width["view_dependent"]) == ("inconclusive", True)
    assert report.count(describe_width(width)) == 2
    up = summary["rank_statistics"]["full"]["up_proj"]  # layers 36, 40, 38
    assert up["energy_90"] == {"median": 38.0, "q1": 37.0, "q3": 39.0, "layers": 3}
    assert up["energy_90_over_r"]["median"] == pytest.approx(38 / lora_r)
    assert up["energy_90_over_gaussian"]["median"] == pytest.approx(
        38 / 60
    )  # random_energy_90 of the records
    assert "| up_proj | 128 | 38 [37–39] |" in report


def test_matrices_without_energy_90_are_left_out_of_the_medians(tmp_path: Path) -> None:
    full = {**FULL_E90, "gate_proj": (30, 50, None)}  # median of (30, 50) = 40, not of (30, 50, 0)
    summary = build_summary(study_dir(tmp_path, 4, full), tmp_path)
    assert summary["modules"]["gate_proj"]["full_energy_90_median"] == 40
    assert summary["headline"]["mlp_full_energy_90_over_lora_r"] == pytest.approx(10.0)  # (10, 9.5, 15)
    assert summary["headline"]["holds"] is True  # exactly 10 × r counts


def test_a_module_without_any_energy_90_is_null_not_nan(tmp_path: Path) -> None:
    full = {**FULL_E90, "q_proj": (None, None, None)}
    summary = build_summary(study_dir(tmp_path, 4, full), tmp_path)
    assert summary["modules"]["q_proj"]["full_energy_90_median"] is None
    write_json(tmp_path / "summary.json", summary)  # valid JSON: NaN would be refused
    assert (
        json.loads((tmp_path / "summary.json").read_text())["modules"]["q_proj"]["full_over_lora_r"] is None
    )
    with pytest.raises(OutputError, match="NaN or infinite"):
        write_json(tmp_path / "bad.json", {"x": float("nan")})
    assert not (tmp_path / "bad.json").exists()


def reproduction_file(model: str = "smollm2-135m") -> dict[str, Any]:
    return {
        "name": "quick",
        "reproduce": "quick",
        "base": {"model": model, "data": "builtin:code", "max_steps": 6, "save_steps": 2},
        "runs": [
            {"name": "full", "method": "full", "lr": 5e-5},
            {"name": "lora", "method": "lora", "lora_r": 2, "lora_alpha": 4, "lr": 5e-4},
        ],
    }


def test_a_reproduction_needs_runs_full_and_lora_trained_alike() -> None:
    assert parse_study(reproduction_file(), "q.yaml").resolved["reproduce"] == "quick"
    raw = reproduction_file()
    raw["runs"] = raw["runs"][:1]
    with pytest.raises(InputError, match="needs two runs named full"):
        parse_study(raw, "q.yaml")
    raw = reproduction_file()
    raw["runs"][1]["seed"] = 3
    with pytest.raises(InputError, match="runs full and lora differ in seed"):
        parse_study(raw, "q.yaml")
    raw = reproduction_file()
    raw["base"]["data"] = "builtin:zh-text"
    with pytest.raises(InputError, match="builtin:code or builtin:math, not builtin:zh-text"):
        parse_study(raw, "q.yaml")
    raw = reproduction_file()
    raw["reproduce"] = "medium"
    with pytest.raises(InputError, match="must be one of quick, long"):
        parse_study(raw, "q.yaml")


def test_similarity_must_name_runs_of_the_study() -> None:
    raw = {**reproduction_file(), "evaluate": {"similarity": [["full", "lorra"]]}}
    with pytest.raises(InputError, match="similarity names 'lorra'"):
        parse_study(raw, "q.yaml")
    raw = {**reproduction_file(), "evaluate": {"similarity": "full"}}
    with pytest.raises(InputError, match="a list of pairs of run names"):
        parse_study(raw, "q.yaml")
