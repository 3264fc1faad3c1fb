"""report.md from hand-made study.json documents: the tables, the seed intervals and each claim's verdict."""

from __future__ import annotations

from pathlib import Path

import pytest

from deltarank.study.claims.reference import check_claims
from deltarank.study.report.markdown import write_report
from tests.study.example_study import belle_study, biderman_study


def verdicts(study: dict[str, object]) -> dict[str, str]:
    return {c["id"]: c["verdict"] for c in check_claims(study)}


def test_biderman_claims() -> None:
    claims = {c["id"]: c for c in check_claims(biderman_study())}
    assert {k: c["verdict"] for k, c in claims.items()} == {
        "lora_learns_less_forgets_less": "consistent",
        "regularised_like_full": "consistent",
        "diversity_order": "consistent",
        "full_rank_multiple": "consistent",
    }
    assert claims["full_rank_multiple"]["numbers"]["ratio"] == 25.0  # median(40, 60) = 50 over r = 2
    assert claims["diversity_order"]["numbers"]["base"] == 6.0
    (found,) = claims["lora_learns_less_forgets_less"]["numbers"]["contexts"]
    # LoRA − full held-out loss: 1.61 − 1.21 = +0.40; Welch over two seeds each: ±4.303 × √(0.0002/2 + 0.0002/2)
    # = ±0.0608, and the bootstrap over the four sequences' paired differences (±0.02 at most) in quadrature
    assert found["learning"]["estimate"] == pytest.approx(0.40)
    assert found["learning"]["seed_half_width"] == pytest.approx(0.0608, abs=1e-4)
    assert found["learning"]["training_noise_included"] is True
    # one full variant: LoRA's learning lies outside full fine-tuning's range, so no matched interpolation
    assert found["matched"] is False
    assert found["forgetting"]["estimate"] == pytest.approx(0.105 - 0.305)
    control = claims["regularised_like_full"]["numbers"]["controls"][0]
    # within ±LoRA's gap from full (0.40 in loss, 0.20 in forgetting), one control seed: evaluation noise only
    assert control["learning"]["claim_range"] == [pytest.approx(-0.40), pytest.approx(0.40)]
    assert control["forgetting"]["training_noise_included"] is False


def test_claims_turn_with_the_numbers() -> None:
    study = biderman_study()
    for row in study["runs"]:
        if row["settings"]["method"] == "lora":  # LoRA now forgets more than full FT
            row["forgetting"]["general_loss_rise"] += 0.5
            for i, value in enumerate(row["per_sequence"]["general"]["sums"]):
                row["per_sequence"]["general"]["sums"][i] = value + 5.0  # +0.5 per token on 10 tokens
        if row["name"] == "full-wd-s0":  # the control now forgets as far from full as LoRA did
            row["forgetting"]["general_loss_rise"] = 0.905
            row["per_sequence"]["general"]["sums"] = [
                s + 6.15 for s in row["per_sequence"]["general"]["sums"]
            ]
    found = verdicts(study)
    assert found["lora_learns_less_forgets_less"] == "inconsistent"
    assert found["regularised_like_full"] == "inconsistent"


def test_belle_claims() -> None:
    claims = {c["id"]: c for c in check_claims(belle_study())}
    # 60, 62, 64% (and 70, 72, 74%) at log2 sizes 6.64, 7.64, 8.64: 2 points per doubling; `big` has one size
    assert claims["points_per_doubling"]["numbers"]["slopes"] == {
        "tiny lora": pytest.approx(2.0),
        "tiny full": pytest.approx(2.0),
    }
    # 200 examples per accuracy: each point ±3.5 points (binomial SE); the mean slope ½Σ(cᵢ yᵢ) over both series
    # with c = (−½, 0, ½): SE √(4 × ¼ × ¼ × 0.24·0.76-ish/200 × 10⁴) ≈ 1.65, ±3.2: inside and outside 1–3
    assert claims["points_per_doubling"]["verdict"] == "inconclusive"
    stat = claims["points_per_doubling"]["numbers"]["statistic"]
    assert stat["estimate"] == pytest.approx(2.0) and stat["ci95_low"] < 1.0 < 3.0 < stat["ci95_high"]
    assert claims["full_cost_multiple"]["verdict"] == "consistent"
    assert claims["full_cost_multiple"]["numbers"]["ratio"] == pytest.approx(4.0)
    assert claims["lora_bigger_base"]["verdict"] == "inconclusive"  # −5 points ± 9.7 on 200 examples
    assert "diversity_order" not in claims  # a BELLE study: Biderman's claims are not checked


def test_belle_claims_with_larger_evaluation_sets() -> None:
    study = belle_study()
    for row in study["runs"]:
        if "accuracy" in row["learning"]:
            row["learning"]["accuracy_examples"] = 20_000  # binomial SE / 10
    claims = {c["id"]: c for c in check_claims(study)}
    assert claims["points_per_doubling"]["verdict"] == "consistent"  # 2.0 ± 0.32 inside 1–3
    assert claims["lora_bigger_base"]["verdict"] == "inconsistent"  # −5 ± 0.97 points: entirely below 0


def test_report_text(tmp_path: Path) -> None:
    path = tmp_path / "report.md"
    write_report(biderman_study(), path)
    text = path.read_text()
    assert text.startswith("# deltarank study: biderman-test\n")
    assert "| run | method | data_size | seed | weight_decay | held-out loss | Δ loss | forgetting |" in text
    assert "| base |  |  |  |  | 2.0000 | – | – | 6.00 |" in text
    assert "| full-s0 | full | 32 | 0 |  | 1.2000 | -0.8000 | +0.3000 | 2.00 |" in text
    # full's two seeds: mean 1.21, std 0.01414, t(0.975, 1) = 12.706: half-width 12.706 × 0.01414 / √2 = 0.1271
    assert "| full | 32 |  | 2 | 1.2100 ± 0.1271 |" in text
    # full − LoRA held-out loss: −0.40, Welch dof 2, interval ±4.303 × √(0.0002/2 + 0.0002/2) = ±0.0608
    assert (
        "- method full − lora (data_size 32), held-out loss: -0.4000 [-0.4608, -0.3392], differs (n = 2 and 2)"
        in text
    )
    assert (
        "**LoRA learns less and forgets less than full fine-tuning** (Biderman et al. 2024): **consistent**"
        in text
    )
    assert "| full-s0 | 40 / 20 | 60 / 30 |" in text


def test_forgetting_below_zero_beyond_its_interval_is_said_so(tmp_path: Path) -> None:
    """A KL estimate whose 95% interval lies below 0 is not printed as a plain negative forgetting."""
    study = biderman_study()
    for row in study["runs"]:
        if row["name"] == "full-s0":  # impossible for a KL: the set was not the base's own samples
            row["forgetting"].update(general_loss_rise=-0.02, general_loss_rise_ci95=[-0.03, -0.01])
        if row["name"] == "full-s1":  # negative, but its interval reaches 0: evaluation noise
            row["forgetting"].update(general_loss_rise=-0.005, general_loss_rise_ci95=[-0.02, 0.01])
    path = tmp_path / "report.md"
    write_report(study, path)
    text = path.read_text()
    below = "| full-s0 | full | 32 | 0 |  | 1.2000 | -0.8000 | -0.0200 (below 0 beyond its 95% interval) |"
    assert below in text
    assert "| full-s1 | full | 32 | 1 |  | 1.2200 | -0.7800 | -0.0050 |" in text
    assert (
        "Forgetting below 0 beyond its 95% interval: a KL divergence is never negative: the forgetting set is "
        "not this base model's own samples." in text
    )
    assert "forgetting: KL(base‖tuned), nats/token" in text


def test_inconclusive_when_seeds_disagree() -> None:
    study = biderman_study()
    losses = {"full-s0": 1.20, "full-s1": 1.30, "lora-s0": 1.22, "lora-s1": 1.32}
    for row in study["runs"]:
        if row["name"] in losses:
            row["learning"]["held_out_loss"] = losses[row["name"]]
    # LoRA − full: +0.02 with Welch half-width 4.303 × √(0.005/2 + 0.005/2) = 0.304: the interval holds 0
    assert verdicts(study)["lora_learns_less_forgets_less"] == "inconclusive"


def test_one_seed_report(tmp_path: Path) -> None:
    path = tmp_path / "report.md"
    write_report(belle_study(), path)
    text = path.read_text()
    assert "Every setting ran with one seed" in text and "## Differences" not in text
    assert "| base |  |  |  |  | 2.0000 | – | 50.0% |" in text
    assert "**LoRA benefits from a bigger base model** (BELLE, Sun et al. 2023): **inconclusive**" in text


def test_rank_claim_against_the_smallest_lora_rank() -> None:
    study = biderman_study()
    study["runs"][3]["settings"]["lora_r"] = 4  # lora-s1 now r = 4: full's median energy_90 50 is 25× r = 2
    claim = {c["id"]: c for c in check_claims(study)}["full_rank_multiple"]
    assert claim["numbers"]["ratios"] == {"2": 25.0, "4": 12.5} and claim["numbers"]["ratio"] == 25.0
    assert "25.0× r = 2, 12.5× r = 4" in claim["evidence"]


def test_rank_claim_shows_both_views_and_one_verdict_when_they_disagree(tmp_path: Path) -> None:
    """MLP 30× r = 2 is inside 10–100×, all module types 5× is not: the claim is view-dependent, and the
    study's claims and report.md show both views (the reproduce summary's test checks the same there)."""
    study = biderman_study()
    for row in study["runs"]:
        if row["settings"]["method"] == "full" and row["ranks"]:
            row["ranks"] = {
                m: {"energy_90_median": v, "noise_floor_median": v / 2}
                for m, v in {"q_proj": 10.0, "k_proj": 10.0, "down_proj": 60.0}.items()
            }
    claim = {c["id"]: c for c in check_claims(study)}["full_rank_multiple"]
    assert claim["verdict"] == "inconclusive" and claim["numbers"]["view_dependent"] is True
    assert claim["numbers"]["mlp_ratio"] == 30.0 and claim["numbers"]["ratio"] == 5.0
    both = "MLP 30.0× [30.0, 30.0] (consistent), all modules 5.0× [5.0, 5.0] (inconsistent) of r = 2"
    assert both in claim["evidence"]
    path = tmp_path / "report.md"
    write_report(study, path)
    assert both in path.read_text() and "**inconclusive**" in path.read_text()
