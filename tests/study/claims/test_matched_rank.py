"""The smallest LoRA rank matching full fine-tuning: each method at its best learning rate, a 5% margin."""

from __future__ import annotations

from typing import Any

import pytest

from deltarank.study.claims.matched_rank import smallest_matching_rank
from deltarank.study.claims.reference import check_claims
from tests.study.example_study import document, run


def _seeds(
    name: str, method: str, lr: float, loss: float, jitter: float, lora_r: int | None = None
) -> list[dict]:
    """Three seeds at losses loss + jitter, loss − jitter, loss + jitter."""
    return [
        run(f"{name}-s{s}", method, seed=s, lr=lr, lora_r=lora_r, loss=loss + jitter * (-1) ** s)
        for s in range(3)
    ]


def _sweep() -> dict[str, Any]:
    """Base loss 2.0. Full fine-tuning at lr 1e-5 (loss 1.50) and 2e-5 (1.00, its best: learned 1.0, so the
    margin is 0.05). LoRA r = 4 at 1.30 (learns less by 0.30); r = 16 at lr 1e-4 (1.20) and 2e-4 (1.0467 mean
    of 1.06, 1.02, 1.06: seed noise wide enough to reach past 0.05); r = 64 at 1.00 (matches)."""
    runs = [
        *_seeds("full-lr1e-5", "full", 1e-5, 1.50, 0.002),
        *_seeds("full-lr2e-5", "full", 2e-5, 1.00, 0.002),
        *_seeds("lora-r4", "lora", 2e-4, 1.30, 0.002, lora_r=4),
        *_seeds("lora-r16-lr1e-4", "lora", 1e-4, 1.20, 0.002, lora_r=16),
        *_seeds("lora-r16-lr2e-4", "lora", 2e-4, 1.04, 0.02, lora_r=16),
        *_seeds("lora-r64", "lora", 2e-4, 1.00, 0.002, lora_r=64),
    ]
    base = {"learning": {"held_out_loss": 2.0}, "forgetting": {"general_loss": 1.0}}
    return document("sweep-test", runs, base)


def test_each_rank_gets_a_label_and_the_smallest_match_is_found() -> None:
    study = _sweep()
    found = smallest_matching_rank(study["runs"], study)
    assert found is not None
    (ctx,) = found["numbers"]["contexts"]
    assert ctx["full"] == "full-lr2e-5-s0+full-lr2e-5-s1+full-lr2e-5-s2"
    assert ctx["full_lr_at_edge"] is True  # 2e-5 is the highest full lr tried
    assert ctx["full_learning"] == pytest.approx(2.0 - (1.002 + 0.998 + 1.002) / 3)
    assert ctx["margin"] == pytest.approx(0.05 * ctx["full_learning"])
    by_rank = {row["rank"]: row for row in ctx["ranks"]}
    assert [row["rank"] for row in ctx["ranks"]] == [4, 16, 64]
    assert by_rank[4]["statistic"]["verdict"] == "inconsistent"  # +0.30 ± a few thousandths, above 0.05
    assert by_rank[16]["run"].startswith("lora-r16-lr2e-4")  # the better of its two learning rates
    assert by_rank[16]["statistic"]["estimate"] == pytest.approx(
        (1.06 + 1.02 + 1.06) / 3 - (1.002 + 0.998 + 1.002) / 3
    )
    assert by_rank[16]["statistic"]["verdict"] == "inconclusive"  # [−0.01, +0.10] straddles 0.05
    assert by_rank[64]["statistic"]["verdict"] == "consistent"
    assert by_rank[64]["share_of_full_learning"] == pytest.approx(1.0, abs=1e-6)
    assert ctx["smallest_matching_rank"] == 64
    assert found["verdict"] == "consistent"
    assert "smallest matching rank: 64" in found["evidence"]


def test_no_rank_matches_when_every_rank_learns_less() -> None:
    study = _sweep()
    study["runs"] = [r for r in study["runs"] if not r["name"].startswith(("lora-r64", "lora-r16-lr2e-4"))]
    found = smallest_matching_rank(study["runs"], study)
    assert found is not None
    assert found["numbers"]["contexts"][0]["smallest_matching_rank"] is None
    assert found["verdict"] == "inconsistent"
    assert "no rank tried matches" in found["evidence"]


def test_one_lora_rank_is_not_a_rank_sweep() -> None:
    study = _sweep()
    study["runs"] = [r for r in study["runs"] if "r4" not in r["name"] and "r64" not in r["name"]]
    assert smallest_matching_rank(study["runs"], study) is None
    assert "lora_rank_matching_full" in {c["id"] for c in check_claims(_sweep())}


def test_self_sample_nulls_are_not_a_context_of_any_claim() -> None:
    """The quick-science study checked its two null runs against each other as a context of "LoRA learns less";
    runs on builtin:self-samples are nulls and stay out of the claims."""
    study = _sweep()
    before = {c["id"]: c for c in check_claims(study)}
    for name, method, r in (("full-null", "full", None), ("lora-null", "lora", 16)):
        row = run(name, method, lr=2e-5 if method == "full" else 2e-4, lora_r=r, loss=1.99)
        row["settings"]["data"] = "builtin:self-samples"
        study["runs"].append(row)
    after = {c["id"]: c for c in check_claims(study)}
    assert after.keys() == before.keys()
    for claim_id, claim in after.items():
        assert claim["evidence"] == before[claim_id]["evidence"], claim_id
        assert "null" not in claim["evidence"], claim_id


def test_the_rank_claim_divides_by_the_smallest_rank_that_learns_as_much() -> None:
    """Full FT's ΔW energy_90 640 on both module types: against the smallest matching rank r = 64 it is 10×;
    dividing by the study's smallest r = 4, which learns less, would give 160×."""
    from deltarank.study.claims.biderman import full_rank_multiple

    study = _sweep()
    for row in study["runs"]:
        if row["name"].startswith("full-lr2e-5"):
            row["ranks"] = {m: {"energy_90_median": 640.0} for m in ("q_proj", "down_proj")}
    matched = full_rank_multiple(study["runs"], study)
    assert matched is not None
    assert matched["numbers"]["lora_r"] == 64 and matched["numbers"]["lora_r_matched"] is True
    assert matched["numbers"]["views"]["all_modules"]["multiple"] == pytest.approx(10.0)
    assert "the smallest LoRA rank learning as much, r = 64" in matched["evidence"]
    unmatched = full_rank_multiple(study["runs"])  # no study: the smallest r of the study
    assert unmatched is not None and unmatched["numbers"]["lora_r"] == 4
    assert unmatched["numbers"]["views"]["all_modules"]["multiple"] == pytest.approx(160.0)
