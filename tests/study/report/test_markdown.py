"""report.md from hand-made study.json documents: the tables, the seed intervals and each claim's verdict."""

from __future__ import annotations

from pathlib import Path

import pytest

from deltarank.study.claims.learns_less_forgets_less import interpolate
from deltarank.study.claims.reference import check_claims
from deltarank.study.report.markdown import write_report
from tests.study.example_study import belle_study, biderman_study


def verdicts(study: dict[str, object]) -> dict[str, str]:
    return {c["id"]: c["verdict"] for c in check_claims(study)}


def test_biderman_claims() -> None:
    claims = {c["id"]: c for c in check_claims(biderman_study())}
    assert {k: c["verdict"] for k, c in claims.items()} == {
        "lora_learns_less_forgets_less": "supported",
        "regularised_like_full": "supported",
        "diversity_order": "supported",
        "full_rank_multiple": "supported",
    }
    assert claims["full_rank_multiple"]["numbers"]["ratio"] == 25.0  # median(40, 60) = 50 over r = 2
    assert claims["diversity_order"]["numbers"] == {"base": 6.0, "lora": 4.0, "full": 2.0}
    learn = claims["lora_learns_less_forgets_less"]["numbers"]
    assert (learn["pairs"], learn["lora_learns_less"], learn["lora_forgets_less"]) == (1, 1, 1)


def test_claims_turn_with_the_numbers() -> None:
    study = biderman_study()
    for row in study["runs"]:
        if row["settings"]["method"] == "lora":  # LoRA now forgets more than full FT
            row["forgetting"]["general_loss_rise"] += 0.5
        if row["name"] == "full-wd-s0":  # the control now forgets like LoRA did
            row["forgetting"]["general_loss_rise"] = 1.5
    found = verdicts(study)
    assert found["lora_learns_less_forgets_less"] == "mixed"
    assert found["regularised_like_full"] == "not supported"


def test_belle_claims() -> None:
    claims = {c["id"]: c for c in check_claims(belle_study())}
    assert claims["points_per_doubling"]["verdict"] == "supported"
    # 60, 62, 64% (and 70, 72, 74%) at log2 sizes 6.64, 7.64, 8.64: 2 points per doubling; `big` has one size
    assert claims["points_per_doubling"]["numbers"]["slopes"] == {
        "tiny lora": pytest.approx(2.0),
        "tiny full": pytest.approx(2.0),
    }
    assert claims["full_cost_multiple"]["verdict"] == "supported"
    assert claims["full_cost_multiple"]["numbers"]["ratio"] == pytest.approx(4.0)
    assert claims["lora_bigger_base"]["verdict"] == "not supported"
    assert "diversity_order" not in claims  # a BELLE study: Biderman's claims are not checked


def test_interpolation() -> None:
    points = [(-1.2, 0.30), (-1.6, 0.10)]
    assert interpolate(points, -1.4) == pytest.approx(0.20)
    assert interpolate(points, -1.0) is None


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
        "**LoRA learns less and forgets less than full fine-tuning** (Biderman et al. 2024): **supported**"
        in text
    )
    assert "| full-s0 | 40 / 20 | 60 / 30 |" in text


def test_within_noise() -> None:
    study = biderman_study()
    losses = {"full-s0": 1.20, "full-s1": 1.30, "lora-s0": 1.22, "lora-s1": 1.32}
    for row in study["runs"]:
        if row["name"] in losses:
            row["learning"]["held_out_loss"] = losses[row["name"]]
    # LoRA − full: +0.02 with Welch half-width 4.303 × √(0.005/2 + 0.005/2) = 0.304: the interval holds 0
    assert verdicts(study)["lora_learns_less_forgets_less"] == "within noise"


def test_one_seed_report(tmp_path: Path) -> None:
    path = tmp_path / "report.md"
    write_report(belle_study(), path)
    text = path.read_text()
    assert "Every setting ran with one seed" in text and "## Differences" not in text
    assert "| base |  |  |  |  | 2.0000 | – | 50.0% |" in text
    assert "**LoRA benefits from a bigger base model** (BELLE, Sun et al. 2023): **not supported**" in text


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
    assert claim["verdict"] == "view-dependent"
    assert claim["numbers"]["mlp_ratio"] == 30.0 and claim["numbers"]["ratio"] == 5.0
    both = "MLP 30.0× (supported), all modules 5.0× (not supported) of r = 2"
    assert both in claim["evidence"]
    path = tmp_path / "report.md"
    write_report(study, path)
    assert both in path.read_text() and "**view-dependent**" in path.read_text()
