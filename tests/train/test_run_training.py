"""End-to-end runs on the tiny Llama: what full and LoRA change, what a run writes, every data shape."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from deltarank.errors import DeltarankError
from deltarank.train.config_file import load_train_config
from deltarank.train.trainer import run_training
from tests.train.conftest import write_jsonl
from tests.train.tiny_runs import PROJECTIONS, tiny_config


class Snapshot(TrainerCallback):
    """Keeps a copy of every parameter at the end of training."""

    def __init__(self) -> None:
        self.params: dict[str, torch.Tensor] = {}

    def on_train_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        self.params = {name: p.detach().clone() for name, p in model.named_parameters()}


def test_full_changes_every_projection_and_saves_fp32(
    tiny_lm_dir: Path, pc_data: Path, tmp_path: Path
) -> None:
    result = run_training(tiny_config(tiny_lm_dir, pc_data, tmp_path / "full", save_steps=1))
    base = load_file(tiny_lm_dir / "model.safetensors")
    tuned = load_file(tmp_path / "full" / "model.safetensors")
    assert set(tuned) == set(base)
    projections = [n for n in base if n.endswith(tuple(f"{p}.weight" for p in PROJECTIONS))]
    assert len(projections) == 2 * 7
    for name in projections:
        assert tuned[name].dtype == torch.float32
        assert (tuned[name] - base[name]).abs().min() > 0, name  # Adam moves every entry (lr 1e-3)
    for step in (1, 2):
        checkpoint = tmp_path / "full" / f"checkpoint-{step}"
        assert {"config.json", "model.safetensors"} <= {p.name for p in checkpoint.iterdir()}
        assert (
            load_file(checkpoint / "model.safetensors")["model.layers.0.self_attn.q_proj.weight"].dtype
            == torch.float32
        )
    assert torch.equal(
        load_file(tmp_path / "full" / "checkpoint-2" / "model.safetensors")[projections[0]],
        tuned[projections[0]],
    )
    assert result.run["parameters"]["trainable"] == result.run["parameters"]["total"]


def test_lora_changes_only_adapter_weights(tiny_lm_dir: Path, pc_data: Path, tmp_path: Path) -> None:
    snapshot = Snapshot()
    out = tmp_path / "lora"
    result = run_training(
        tiny_config(tiny_lm_dir, pc_data, out, method="lora", lora_r=4), callbacks=[snapshot]
    )
    base = load_file(tiny_lm_dir / "model.safetensors")
    lora_params = {n: p for n, p in snapshot.params.items() if "lora_" in n}
    assert len(lora_params) == 2 * 7 * 2  # A and B for each projection of both blocks
    for name, value in snapshot.params.items():
        if "lora_" in name:
            continue
        base_name = name.removeprefix("base_model.model.").replace(".base_layer", "")
        assert torch.equal(value, base[base_name]), name
    adapter = load_file(out / "adapter_model.safetensors")
    b_norms = [adapter[n].norm().item() for n in adapter if "lora_B" in n]
    assert len(b_norms) == 14 and min(b_norms) > 0  # B starts at zero; training moved it
    config = json.loads((out / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"], config["use_rslora"]) == (4, 8, False)  # α = 2r
    assert set(config["target_modules"]) == set(PROJECTIONS)
    # r·(in + out) per projection, 2 blocks: q, o 32→32; k, v 32→16 (2 KV heads of 8); gate, up 32→64; down 64→32
    per_block = (32 + 32) * 2 + (32 + 16) * 2 + (32 + 64) * 3
    assert result.run["parameters"]["trainable"] == 2 * 4 * per_block == 4096


def test_run_writes_log_and_cost_record(tiny_lm_dir: Path, pc_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = run_training(tiny_config(tiny_lm_dir, pc_data, out, max_steps=3, eval_data=str(pc_data)))
    lines = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    steps = [e for e in lines if "loss" in e]
    assert [e["step"] for e in steps] == [1, 2, 3]
    assert {"loss", "learning_rate", "grad_norm", "tokens_seen", "elapsed_s"} <= set(steps[0])
    assert steps[0]["learning_rate"] == pytest.approx(1e-3)  # linear decay from the peak, no warm-up
    assert [e["step"] for e in lines if "eval_loss" in e] == [3]  # eval once, at the end
    run = json.loads((out / "run.json").read_text())
    assert run == json.loads(json.dumps(result.run))
    assert run["schema"] == "deltarank.train-run/1"
    assert run["steps"] == 3 and run["tokens_seen"] == steps[-1]["tokens_seen"] > 0
    assert run["tokens_per_second"] > 0 and run["peak_memory_bytes"] > 10**7
    assert run["dtypes"] == {"master_weights": "float32", "compute": "float32"}
    assert run["config"]["lr"] == 1e-3 and run["seed"] == 0
    assert run["versions"]["torch"] == torch.__version__.split("+")[0] or run["versions"]["torch"]
    assert "git_commit" in run and run["eval_loss"] == lines[-1]["eval_loss"]
    saved = load_train_config(out / "train_config.yaml")
    assert saved == tiny_config(tiny_lm_dir, pc_data, out, max_steps=3, eval_data=str(pc_data)).resolved()


def test_bf16_autocast_keeps_fp32_master_weights(tiny_lm_dir: Path, pc_data: Path, tmp_path: Path) -> None:
    result = run_training(
        tiny_config(tiny_lm_dir, pc_data, tmp_path / "bf16", mixed_precision="bf16-mixed", max_steps=1)
    )
    assert result.run["dtypes"] == {"master_weights": "float32", "compute": "bfloat16 autocast"}
    tuned = load_file(tmp_path / "bf16" / "model.safetensors")
    assert {t.dtype for t in tuned.values()} == {torch.float32}


def test_attention_targets_with_rslora_and_dora(tiny_lm_dir: Path, pc_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "dora"
    config = tiny_config(
        tiny_lm_dir, pc_data, out, method="lora", lora_r=4, target_modules="attention", rslora=True, dora=True
    )
    run_training(config)
    adapter_config = json.loads((out / "adapter_config.json").read_text())
    assert sorted(adapter_config["target_modules"]) == ["k_proj", "o_proj", "q_proj", "v_proj"]
    assert (adapter_config["use_rslora"], adapter_config["use_dora"], adapter_config["lora_alpha"]) == (
        True,
        True,
        8,
    )
    names = list(load_file(out / "adapter_model.safetensors"))
    assert not [n for n in names if "mlp" in n]
    assert (
        len([n for n in names if "lora_magnitude_vector" in n]) == 2 * 4
    )  # DoRA's m, one per adapted matrix


RECORDS: dict[str, list[dict[str, Any]]] = {
    "messages": [
        {"messages": [{"role": "user", "content": f"Say {i}"}, {"role": "assistant", "content": f"{i}"}]}
        for i in range(4)
    ],
    "alpaca": [{"instruction": "Double", "input": str(i), "output": str(2 * i)} for i in range(4)],
    "text": [{"text": "def add(a, b):\n    return a + b\n" * 3} for _ in range(4)],
}


@pytest.mark.parametrize("shape", sorted(RECORDS))
def test_every_data_shape_trains(tiny_lm_dir: Path, tmp_path: Path, shape: str) -> None:
    data = write_jsonl(tmp_path / f"{shape}.jsonl", RECORDS[shape])
    result = run_training(tiny_config(tiny_lm_dir, data, tmp_path / "out", method="lora", max_steps=1))
    assert result.run["data"]["train"]["format"] == shape
    assert result.final_loss is not None and result.final_loss > 0


def test_builtin_math_trains(tiny_lm_dir: Path, tmp_path: Path) -> None:
    config = tiny_config(
        tiny_lm_dir, "builtin:math", tmp_path / "out", eval_data="builtin:math:test", max_eval_sequences=4
    )
    run = run_training(config).run
    assert run["data"]["train"]["sequences"] == 2 * 2  # only the sequences 2 steps of batch 2 consume
    assert run["data"]["eval"]["sequences"] == 4


def test_output_dir_must_be_empty_and_resume_needs_a_checkpoint(
    tiny_lm_dir: Path, pc_data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "something").write_text("x")
    with pytest.raises(DeltarankError, match=r"already exists \(use --force to replace it, or --resume"):
        run_training(tiny_config(tiny_lm_dir, pc_data, out))
    assert (out / "something").read_text() == "x"  # refused: untouched
    with pytest.raises(DeltarankError, match="--resume: no complete checkpoint-<step> directory"):
        run_training(tiny_config(tiny_lm_dir, pc_data, out, resume=True))
    run_training(tiny_config(tiny_lm_dir, pc_data, out, force=True))  # --force: the old files are replaced
    assert not (out / "something").exists() and (out / "run.json").is_file()
