"""Run labels, checkpoint steps, token counts and LoRA ranks read from results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deltarank.errors import DeltarankError, InputError
from deltarank.figures.runs import (
    checkpoint_step,
    derived_labels,
    display_labels,
    energy_rank,
    final_runs,
    lora_rank_by_module,
    make_runs,
    medians,
    run_label,
    tokens_at,
)
from tests.figures.synthetic import full_result, lora_result, matrix, planted_result


@pytest.mark.parametrize(
    ("tuned", "label"),
    [
        ("runs/code/full", "full"),
        ("runs/code/full/checkpoint-40", "full"),
        ("runs/code/lora/adapter_model.safetensors", "lora"),
        ("/abs/runs/lora-r16/final", "lora-r16"),
        ("my-model.gguf", "my-model"),
        ("checkpoint-3", "run"),
    ],
)
def test_run_label(tuned: str, label: str) -> None:
    assert run_label(tuned) == label


def test_derived_labels_tell_runs_apart() -> None:
    paths = ["runs/code/full", "runs/math/full/checkpoint-20", "runs/math/full", "runs/code/lora"]
    assert derived_labels(paths) == ["code/full", "math/full", "math/full", "code/lora"]
    assert derived_labels(["a/full", "a/full/checkpoint-2", "b/lora"]) == ["full", "full", "lora"]
    assert derived_labels(["full", "x/full"]) == ["full", "x/full"]


def test_checkpoint_step() -> None:
    assert checkpoint_step("runs/full/checkpoint-120") == 120
    assert checkpoint_step("runs/full/checkpoint_7/model.safetensors") == 7
    assert checkpoint_step("runs/full") is None


def test_tokens_from_train_log(tmp_path: Path) -> None:
    run_dir = tmp_path / "full"
    (run_dir / "checkpoint-20").mkdir(parents=True)
    lines = [{"step": 10, "tokens": 5120}, {"step": 20, "num_input_tokens_seen": 10240}, {"loss": 1.0}]
    (run_dir / "train_log.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\nnot json\n")
    assert tokens_at(str(run_dir / "checkpoint-20"), 20) == 10240
    assert tokens_at(str(run_dir / "checkpoint-20"), 15) == 5120
    assert tokens_at(str(tmp_path / "elsewhere"), 20) is None


def test_make_runs_labels_and_steps() -> None:
    runs = make_runs([full_result("r/full/checkpoint-20"), full_result("r/full")], None)
    assert [(r.label, r.step) for r in runs] == [("full", 20), ("full", None)]
    assert display_labels(runs) == ["full @ 20", "full (final)"]
    assert [r.label for r in make_runs([full_result(), lora_result()], ["A", "B"])] == ["A", "B"]
    with pytest.raises(DeltarankError, match="2 --label values for 1 result"):
        make_runs([full_result()], ["a", "b"])


def test_final_runs_keeps_the_latest_per_label() -> None:
    runs = make_runs(
        [
            full_result("r/full/checkpoint-40"),
            full_result("r/full/checkpoint-80"),
            lora_result("r/lora/checkpoint-9"),
        ]
    )
    assert [(r.label, r.step) for r in final_runs(runs)] == [("full", 80), ("lora", 9)]
    with_final = make_runs([full_result("r/full"), full_result("r/full/checkpoint-80")])
    assert [r.step for r in final_runs(with_final)] == [None]


def test_is_adapter_and_lora_rank() -> None:
    runs = make_runs([full_result(), lora_result(rank=4)])
    assert [r.is_adapter for r in runs] == [False, True]
    assert lora_rank_by_module(runs) == {"q_proj": 4, "k_proj": 4, "down_proj": 4}
    assert lora_rank_by_module(runs, 16) == {"q_proj": 16, "k_proj": 16, "down_proj": 16}
    assert lora_rank_by_module(runs[:1]) == {}
    with pytest.raises(DeltarankError, match="positive"):
        lora_rank_by_module(runs, 0)


def test_energy_rank_stored_or_from_sigma() -> None:
    m = matrix("q_proj", 0, [3.0, 1.0, 1.0, 1.0], (4, 4))
    assert energy_rank(m) == m.ranks["energy_90"] == 3.0  # 9+1+1 = 11 ≥ 0.9·12
    bare = matrix("q_proj", 0, [10.0, 1.0, 0.0, 0.0], (4, 4))
    bare = type(bare)(**{**bare.__dict__, "ranks": {}})
    assert energy_rank(bare) == 1.0  # 100 / 101 ≥ 0.9
    with pytest.raises(InputError, match="no 'noise_floor' rank"):
        energy_rank(bare, "noise_floor")


def test_medians_per_module() -> None:
    result = planted_result("r/full", {"q_proj": 224, "k_proj": 40}, noise={"q_proj": 200, "k_proj": 30})
    assert medians(result) == {"q_proj": 224.0, "k_proj": 40.0}
    assert medians(result, "noise_floor") == {"q_proj": 200.0, "k_proj": 30.0}
