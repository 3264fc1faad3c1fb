"""A study figure's label says when a run's weight decay is decoupled (its numbers mean another rule)."""

from __future__ import annotations

from deltarank.figures.study_rows import regularisation_label


def test_decoupled_weight_decay_is_labelled() -> None:
    coupled = {"settings": {"method": "full", "weight_decay": 1e-4, "weight_decay_mode": "coupled"}}
    decoupled = {"coordinates": {"method": "full", "weight_decay": 1e-4, "weight_decay_mode": "decoupled"}}
    both = {"settings": {"weight_decay": 5e-5, "weight_decay_mode": "decoupled", "attention_dropout": 0.1}}
    assert regularisation_label(coupled) == "weight_decay 0.0001"
    assert regularisation_label(decoupled) == "weight_decay 0.0001 (decoupled)"
    assert regularisation_label(both) == "weight_decay 5e-05 (decoupled), attention_dropout 0.1"
    assert regularisation_label({"settings": {"weight_decay": 0.0, "weight_decay_mode": "decoupled"}}) == ""
