"""Functional rank: each method's ΔW as peft merges it (float32), the cuts in a real adapter run, and the shares
and k₉₀ of a section built from known measurements."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from peft import IA3Config, LoHaConfig, LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from deltarank.evaluation.functional_rank import (
    functional_rank_section,
    rank_grid,
    run_functional_rank,
    weight_deltas,
)
from deltarank.evaluation.loss import sequence_losses
from deltarank.evaluation.models import EvalModels
from deltarank.train.formats import IGNORE_INDEX
from deltarank.train.models import resolve_model
from tests.train.conftest import one_thread, save_tiny_model  # noqa: F401 (autouse fixture)

LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
EXAMPLES = [
    ([5, 9, 2, 7, 11, 4, 3, 8], [IGNORE_INDEX, 9, 2, 7, 11, 4, 3, 8]),
    ([1, 6, 6, 2, 9], [IGNORE_INDEX, 6, 6, 2, 9]),
    ([40, 41, 42, 43, 44, 45], [IGNORE_INDEX, IGNORE_INDEX, 42, 43, 44, 45]),
]
CONFIGS = {
    "lora": LoraConfig(r=2, lora_alpha=8, target_modules=LINEAR, init_lora_weights=False),
    "dora": LoraConfig(r=2, lora_alpha=4, target_modules=LINEAR, use_dora=True, init_lora_weights=False),
    "loha": LoHaConfig(r=2, alpha=4, target_modules=LINEAR, init_weights=False),
    "ia3": IA3Config(target_modules=LINEAR, feedforward_modules=["down_proj"], init_ia3_weights=False),
}


def learning(model: Any) -> dict[str, dict[str, Any]]:
    """The held-out loss of EXAMPLES, as a measure."""
    found = sequence_losses(model, EXAMPLES, 0)
    return {"learning": {"value": found["loss"], "sums": found["sums"], "counts": found["counts"]}}


def save_adapter(base_dir: Path, out_dir: Path, method: str) -> Any:
    """A peft adapter of `method` with non-zero weights on every block linear layer; returns the peft model."""
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir), CONFIGS[method])
    model.save_pretrained(out_dir)
    return model.eval()


@pytest.mark.parametrize("method", list(CONFIGS))
def test_each_delta_is_what_peft_merges_in_float32(tmp_path: Path, method: str) -> None:
    base_dir = save_tiny_model(tmp_path / "base")
    merged = save_adapter(base_dir, tmp_path / "adapter", method).merge_and_unload()
    base = dict(AutoModelForCausalLM.from_pretrained(base_dir).named_parameters())
    merged_weights = dict(merged.named_parameters())
    deltas = weight_deltas(base_dir, tmp_path / "adapter", torch.device("cpu"))
    assert len(deltas) == 2 * len(LINEAR)  # every block linear weight of the two layers
    for delta in deltas:
        expected = (merged_weights[delta.parameter] - base[delta.parameter]).detach()
        found = delta.top(delta.rank)
        assert found.dtype == torch.float32
        assert torch.linalg.norm(found - expected) <= 1e-5 * torch.linalg.norm(expected), delta.parameter


def test_an_adapter_run_cuts_the_base_and_restores_it(tmp_path: Path) -> None:
    base_dir = save_tiny_model(tmp_path / "base")
    save_adapter(base_dir, tmp_path / "adapter", "lora")
    loader = EvalModels(resolve_model(str(base_dir)), "cpu")
    before = {n: p.clone() for n, p in loader.base().named_parameters()}
    section = run_functional_rank(loader, tmp_path / "adapter", learning, ks=(1, 2, 4))
    assert section["ks"] == [0, 1, 2] and section["matrices"] == 14  # r = 2: k = 2 is the whole ΔW
    shares = section["learning"]["share"]
    assert shares[0] == pytest.approx(0.0, abs=1e-6)  # k = 0 is the base itself
    assert shares[2] == pytest.approx(1.0, abs=1e-4)  # the merged ΔW is the adapter's
    assert section["learning"]["base"] != section["learning"]["tuned"]
    assert all(torch.equal(p, before[n]) for n, p in loader.base().named_parameters())


def test_shares_intervals_and_k90_of_known_measurements() -> None:
    def measured(sums: list[float]) -> dict[str, dict[str, Any]]:
        return {"learning": {"value": sum(sums) / 4, "sums": sums, "counts": [2, 2]}}

    base, tuned = measured([4.0, 4.0]), measured([2.0, 2.0])  # the run lowered the loss by 1 per token
    points = [measured([4.0, 4.0]), measured([2.3, 2.0]), measured([2.0, 2.0])]
    section = functional_rank_section([0, 1, 2], points, base, tuned)
    assert section["learning"]["share"] == pytest.approx([0.0, 0.925, 1.0])
    assert section["learning"]["share_ci95"][2] == pytest.approx([1.0, 1.0])
    low, high = section["learning"]["share_ci95"][1]
    assert low < 0.9 < high  # the two sequences recover 85% and 100%
    assert section["k90"] == 1 and section["k90_upper"] == 2

    unchanged = functional_rank_section([0, 1], [base, base], base, base)
    assert unchanged["learning"]["share"] == [None, None] and unchanged["k90"] is None


def test_the_grid_ends_at_the_largest_rank(tmp_path: Path) -> None:
    base_dir = save_tiny_model(tmp_path / "base")
    save_adapter(base_dir, tmp_path / "adapter", "ia3")  # dense ΔW: rank up to min(m, n) = 32
    deltas = weight_deltas(base_dir, tmp_path / "adapter", torch.device("cpu"))
    assert rank_grid(deltas) == [0, 1, 2, 4, 8, 16, 32]
