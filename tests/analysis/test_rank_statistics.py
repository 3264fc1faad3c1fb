"""Width-aware rank statistics: every energy rank with its spread over layers, ÷ r, ÷ width, ÷ Gaussian; and the
rank claim on the width-aware scale (the paper's 10–100× of r = 16 on 4096-wide matrices = 3.9–39%)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from deltarank.analysis.engine import spectrum
from deltarank.analysis.maths.reference import random_energy_rank
from deltarank.analysis.results import MatrixSpectrum, SparsityProfile, SpectrumResult
from deltarank.analysis.results.rank_claim import WIDTH_RANGE, describe_width, width_share
from deltarank.analysis.results.rank_statistics import module_rank_statistics, spread
from tests.planting import planted_delta, save_safetensors


def record(
    module: str, layer: int, shape: tuple[int, int], e90: float, gaussian: dict[str, int]
) -> MatrixSpectrum:
    return MatrixSpectrum(
        name=f"model.layers.{layer}.{module}.weight",
        layer=layer,
        module=module,
        shape=shape,
        kind="dense",
        singular_values=(1.0,),
        ranks={"energy_50": e90 / 2, "energy_90": e90, "stable": 2.0 + layer, "participation": 4.0},
        delta_norm=1.0,
        base_norm=1.0,
        erased_fraction=0.0,
        random_energy_90=gaussian.get("energy_90", 0),
        base_dtype="F32",
        tuned_dtype="F32",
        random_ranks=gaussian,
    )


def result(records: list[MatrixSpectrum]) -> SpectrumResult:
    return SpectrumResult("b", "t", "cpu", "float32", (0.5, 0.9), tuple(records))


def test_spread_is_the_median_and_inclusive_quartiles() -> None:
    assert spread([4, 1, None, 3, 2]) == {"median": 2.5, "q1": 1.75, "q3": 3.25, "layers": 4}
    assert spread([7]) == {"median": 7.0, "q1": 7.0, "q3": 7.0, "layers": 1}
    assert spread([None]) is None


def test_each_energy_rank_is_divided_by_r_width_and_the_gaussian_rank_of_its_shape() -> None:
    gaussian = {"energy_50": 100, "energy_90": 400}
    records = [
        record("up_proj", layer, (1536, 576), e90, gaussian) for layer, e90 in enumerate((100, 200, 300))
    ]
    records.append(
        record("k_proj", 0, (192, 576), 96, {})
    )  # written before random_ranks: only energy_90 known
    stats = module_rank_statistics(result(records), lora_r=16)
    up = stats["up_proj"]
    assert (up["width"], up["layers"]) == (576, 3)
    assert up["energy_90"] == {"median": 200.0, "q1": 150.0, "q3": 250.0, "layers": 3}
    assert up["energy_90_over_r"]["median"] == pytest.approx(200 / 16)
    assert up["energy_90_over_width"]["q3"] == pytest.approx(250 / 576)
    assert up["energy_90_over_gaussian"]["median"] == pytest.approx(0.5)
    assert up["energy_50_over_gaussian"]["median"] == pytest.approx(1.0)  # 100 / 100
    assert up["stable"]["median"] == 3.0 and up["participation"]["median"] == 4.0
    k = stats["k_proj"]
    assert k["energy_90_over_width"]["median"] == pytest.approx(0.5)  # 96 of 192
    assert "energy_90_over_gaussian" not in k  # random_energy_90 = 0 here: no reference to divide by
    assert "energy_50_over_gaussian" not in k


def test_the_sparsity_shares_get_their_spread_over_layers() -> None:
    gaussian = {"energy_90": 400}
    records = [
        replace(
            record("up_proj", layer, (1536, 576), 100, gaussian),
            sparsity=SparsityProfile(0.1 * layer, 0.2 * layer, None, 0.5),
        )
        for layer in range(3)
    ]
    records.append(record("k_proj", 0, (192, 576), 96, gaussian))  # a file written before the profile
    stats = module_rank_statistics(result(records))
    up = stats["up_proj"]
    assert up["unchanged"] == pytest.approx({"median": 0.1, "q1": 0.05, "q3": 0.15, "layers": 3})
    assert up["within_atol"]["median"] == 0.2 and up["rank_fraction"]["median"] == 0.5
    assert "within_rounding" not in up  # no record holds it (LoRA: the base is not read)
    assert not {"unchanged", "within_atol", "within_rounding", "rank_fraction"} & set(stats["k_proj"])


def test_the_engine_records_the_gaussian_rank_at_every_threshold(tmp_path: Path) -> None:
    name = "model.layers.0.mlp.up_proj.weight"
    weight = planted_delta((96, 64), [1.0] * 64, seed=1).float()
    base = save_safetensors(tmp_path / "base.safetensors", {name: weight})
    moved = weight + planted_delta((96, 64), [0.4, 0.3, 0.2, 0.1], seed=2).float()
    tuned = save_safetensors(tmp_path / "tuned.safetensors", {name: moved})
    found = spectrum(base, tuned, device="cpu")
    (matrix,) = found.matrices
    assert found.thresholds == (0.5, 0.8, 0.9, 0.95, 0.99)
    assert matrix.random_ranks == {
        f"energy_{round(t * 100)}": random_energy_rank(96, 64, t) for t in (0.5, 0.8, 0.9, 0.95, 0.99)
    }
    assert matrix.random_ranks["energy_90"] == matrix.random_energy_90
    assert SpectrumResult.from_json(found.to_json()).matrices[0].random_ranks == matrix.random_ranks


def test_the_width_claim_uses_the_papers_band() -> None:
    assert pytest.approx((160 / 4096, 1600 / 4096)) == WIDTH_RANGE
    # SmolLM2's quick runs: MLP about 35% of 576, attention 10–31%: both views inside 3.9–39%
    claim = width_share({"up_proj": 185 / 576, "gate_proj": 204 / 576, "down_proj": 201 / 576, "k_proj": 60 / 192,
                         "q_proj": 102 / 576, "v_proj": 65 / 192, "o_proj": 94.5 / 576})  # fmt: skip
    assert claim["views"]["mlp"]["multiple"] == pytest.approx(201 / 576)
    assert claim["views"]["all_modules"]["multiple"] == pytest.approx(185 / 576)  # the 4th of 7
    assert claim["verdict"] == "consistent"
    assert describe_width(claim).startswith("MLP 35% (consistent), all modules 32% (consistent) of the width")
    assert describe_width(claim).endswith("one seed: training noise not included")
    narrow = width_share({"up_proj": 0.5, "q_proj": 0.6})  # above the band in both views
    assert [v["verdict"] for v in narrow["views"].values()] == ["inconsistent", "inconsistent"]
    assert narrow["verdict"] == "inconsistent"
    disagree = width_share({"up_proj": 0.2, "q_proj": 0.6, "k_proj": 0.7})
    assert (disagree["verdict"], disagree["view_dependent"]) == ("inconclusive", True)
