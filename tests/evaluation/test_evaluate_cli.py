"""`deltarank evaluate` on a tiny Llama: HumanEval completions are generated and run only with --execute,
zh-sentiment is scored by exact match of the real generations, held-out loss is measured as training
tokenizes; bad requests stop with one line before a model loads."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from deltarank.cli import main
from deltarank.evaluation import tasks
from deltarank.evaluation.accuracy import sentiment_accuracy
from deltarank.evaluation.generate import end_of_answer, greedy_answer
from deltarank.train import builtin_zh
from deltarank.train.builtin_data import builtin_records, parse_builtin
from deltarank.train.models import load_model, load_tokenizer, resolve_model
from tests.train.conftest import save_tiny_model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny_lm"))


def evaluate(model_dir: Path, out: Path, *args: str) -> dict[str, Any]:
    result = CliRunner().invoke(main, ["evaluate", "--model", str(model_dir), "-o", str(out), *args])
    assert result.exit_code == 0, result.output
    return json.loads(out.read_text())


def test_humaneval_runs_completions_only_with_execute(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = ("--data", "builtin:humaneval", "--limit", "2", "--max-new-tokens", "4")
    calls: list[str] = []
    original = tasks.verdict.check
    monkeypatch.setattr(
        tasks.verdict,
        "check",
        lambda problem, completion, limits, mode: (
            calls.append(completion) or original(problem, completion, limits, mode)
        ),
    )
    shown = evaluate(model_dir, tmp_path / "shown.json", *args)
    assert shown["task"] == "humaneval" and shown["executed"] is False and calls == []
    assert [p["task_id"] for p in shown["problems"]] == ["HumanEval/0", "HumanEval/1"]
    assert "status" not in shown["problems"][0]
    run = evaluate(model_dir, tmp_path / "run.json", *args, "--execute", "--timeout", "5")
    assert len(calls) == 2 and run["executed"] is True
    for problem in run["problems"]:  # a 2-layer random model writes no working Python
        assert problem["status"] == "failed" and problem["isolation"].startswith("bubblewrap:")
    assert run["passed"] == 0 and run["pass_at_1"] == 0.0
    assert run["isolation"].startswith("bubblewrap:") and run["limits"]["timeout_s"] == 5.0


def test_sentiment_accuracy_is_exact_match_of_the_generation(model_dir: Path) -> None:
    source = resolve_model(str(model_dir))
    model, tokenizer = load_model(source).eval(), load_tokenizer(source)
    records = list(builtin_zh.sentiment_records("test"))[:3]
    said = [greedy_answer(model, tokenizer, r["prompt"], 4) for r in records]
    matching = [{**r, "answer": builtin_zh.normalize_answer(s)} for r, s in zip(records, said, strict=True)]
    assert sentiment_accuracy(model, tokenizer, matching, 4)["accuracy"] == 1.0
    other = [{**r, "answer": r["answer"] + "!"} for r in matching]
    assert sentiment_accuracy(model, tokenizer, other, 4)["correct"] == 0


def test_sentiment_cli(model_dir: Path, tmp_path: Path) -> None:
    result = evaluate(model_dir, tmp_path / "a.json", "--data", "builtin:zh-sentiment:test", "--limit", "4",
                      "--max-new-tokens", "2")  # fmt: skip
    assert result["task"] == "accuracy" and result["examples"] == 4
    assert 0 <= result["correct"] <= 4 and result["accuracy"] == result["correct"] / 4


def test_held_out_loss_on_peoples_daily(model_dir: Path, tmp_path: Path) -> None:
    result = evaluate(model_dir, tmp_path / "l.json", "--data", "builtin:zh-text:test", "--limit", "2",
                      "--seq-len", "32")  # fmt: skip
    assert result["task"] == "loss" and result["format"] == "text" and result["examples"] == 2
    assert result["trained_tokens"] == 2 * 31
    assert math.log(100) < result["loss"] < math.log(2000)  # a random model over a 320-token vocabulary


BAD = {
    "execute_without_humaneval": (
        ["--data", "builtin:zh-text:test", "--execute"],
        "--execute runs HumanEval",
    ),
    "unknown_builtin": (["--data", "builtin:zh-sentimnt:test"], "unknown built-in data"),
    "missing_file": (["--data", "nowhere.jsonl"], "data file not found"),
    "missing_tuned": (["--data", "builtin:zh-text:test", "--tuned", "no_run"], "tuned model not found"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_requests_fail_before_loading(model_dir: Path, tmp_path: Path, case: str) -> None:
    args, problem = BAD[case]
    out = tmp_path / "r.json"
    result = CliRunner().invoke(main, ["evaluate", "--model", str(model_dir), "-o", str(out), *args])
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    assert problem in result.output and "Traceback" not in result.output
    assert not out.exists()


@pytest.mark.parametrize("method", ["full", "lora", "adapter"])
def test_a_training_run_is_measured_against_its_base(model_dir: Path, tmp_path: Path, method: str) -> None:
    """`--tuned` reads a full run's safetensors directory, attaches a LoRA adapter to the base, or adds a
    bottleneck adapter's modules to it."""
    run_dir = tmp_path / "run"
    train_args = ["--data", "builtin:zh-text", "--method", method, "--output-dir", str(run_dir), "--max-steps", "2",
                  "--lr", "1e-2", "--seq-len", "32", "--batch-size", "2"]  # fmt: skip
    trained = CliRunner().invoke(main, ["train", "--model", str(model_dir), *train_args])
    assert trained.exit_code == 0, trained.output
    args = ("--data", "builtin:zh-text:test", "--limit", "2", "--seq-len", "32")
    base = evaluate(model_dir, tmp_path / "base.json", *args)
    tuned = evaluate(model_dir, tmp_path / "tuned.json", *args, "--tuned", str(run_dir))
    assert tuned["tuned"] == str(run_dir) and tuned["trained_tokens"] == base["trained_tokens"]
    assert tuned["loss"] < base["loss"] - 0.02  # two large steps on Chinese text lower the Chinese loss


def test_a_qlora_run_is_measured_on_its_nf4_base(tmp_path: Path) -> None:
    """A QLoRA adapter is evaluated on the base quantized again as training quantized it (bitsandbytes' CPU
    4-bit kernels need in_features >= 64: a wider tiny model)."""
    import torch
    from peft import PeftModel

    from deltarank.evaluation.loss import held_out_loss
    from deltarank.train.models import load_trained

    wide = save_tiny_model(tmp_path / "wide", hidden_size=64, intermediate_size=128)
    run_dir = tmp_path / "run"
    train_args = ["--data", "builtin:zh-text", "--method", "qlora", "--output-dir", str(run_dir), "--max-steps",
                  "2", "--lr", "1e-2", "--seq-len", "32", "--batch-size", "2"]  # fmt: skip
    trained = CliRunner().invoke(main, ["train", "--model", str(wide), *train_args])
    assert trained.exit_code == 0, trained.output
    args = ("--data", "builtin:zh-text:test", "--limit", "2", "--seq-len", "32")
    tuned = evaluate(wide, tmp_path / "tuned.json", *args, "--tuned", str(run_dir))
    source = resolve_model(str(wide))
    tokenizer = load_tokenizer(source)
    with torch.no_grad():
        on_nf4 = held_out_loss(load_trained(source, run_dir).eval(), tokenizer, "builtin:zh-text:test", 32, 2)
        on_fp32 = held_out_loss(
            PeftModel.from_pretrained(load_model(source), str(run_dir)).eval(),
            tokenizer,
            "builtin:zh-text:test",
            32,
            2,
        )
    assert tuned["loss"] == pytest.approx(on_nf4["loss"], rel=1e-6)
    assert abs(on_nf4["loss"] - on_fp32["loss"]) > 1e-4  # the 4-bit rounding of the base moves the loss


def test_not_a_training_run_is_one_line(model_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    args = [
        "evaluate",
        "--model",
        str(model_dir),
        "--data",
        "builtin:zh-text:test",
        "--tuned",
        str(tmp_path / "empty"),
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    assert "not a `deltarank train` output" in result.output


def test_existing_output_needs_force(model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    out.write_text("{}")
    args = [
        "evaluate",
        "--model",
        str(model_dir),
        "-o",
        str(out),
        "--data",
        "builtin:zh-text:test",
        "--limit",
        "1",
    ]
    refused = CliRunner().invoke(main, args)
    assert refused.exit_code == 1 and "already exists (use --force to replace it)" in refused.output
    assert out.read_text() == "{}"
    replaced = CliRunner().invoke(main, [*args, "--seq-len", "16", "--force"])
    assert replaced.exit_code == 0, replaced.output
    assert json.loads(out.read_text())["task"] == "loss"


def test_humaneval_is_not_training_data(model_dir: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    args = ["train", "--model", str(model_dir), "--data", "builtin:humaneval", "--method", "lora"]
    result = CliRunner().invoke(main, [*args, "--output-dir", str(run_dir)])
    assert result.exit_code == 1 and "evaluation prompt set, not training data" in result.output
    assert not run_dir.exists()


def test_zh_sentiment_split_names_parse() -> None:
    assert parse_builtin("builtin:zh-sentiment:test").split == "test"
    assert next(builtin_records(parse_builtin("builtin:zh-sentiment")))["answer"] in ("正面", "负面")


def test_an_answer_ends_at_the_default_templates_end_of_turn(model_dir: Path) -> None:
    """Gemma 3's GGUF tokenizer has no chat template and no `<|im_end|>` token: a model trained on deltarank's
    ChatML default writes the marker as text, which must not count against an exact-match answer."""
    tokenizer = load_tokenizer(resolve_model(str(model_dir)))
    chat = [{"role": "user", "content": "评价：很好"}]
    written = "正面<|im_end|>\n<|im_start|>user"
    tokenizer.chat_template = None
    assert end_of_answer(tokenizer, chat, written) == "正面"
    assert end_of_answer(tokenizer, "a plain prompt", written) == written  # no template was applied
    tokenizer.chat_template = "{{ messages[0]['content'] }}"
    assert (
        end_of_answer(tokenizer, chat, written) == written
    )  # the tokenizer's own template ends turns itself


def test_device_is_where_the_models_run(model_dir: Path, tmp_path: Path) -> None:
    """`--device` as every command spells it: the result says where the models ran; a missing CUDA device is
    one line."""
    args = ("--data", "builtin:zh-text:test", "--limit", "2", "--seq-len", "32")
    on_cpu = evaluate(model_dir, tmp_path / "cpu.json", *args, "--device", "cpu")
    assert on_cpu["device"] == "cpu" and on_cpu["request"]["device"] == "cpu"
    import torch

    if torch.cuda.is_available():  # pragma: no cover - depends on the machine
        on_cuda = evaluate(model_dir, tmp_path / "cuda.json", *args, "--device", "cuda")
        assert on_cuda["loss"] == pytest.approx(on_cpu["loss"], rel=1e-4)
        return
    out = tmp_path / "r.json"
    result = CliRunner().invoke(
        main, ["evaluate", "--model", str(model_dir), "-o", str(out), *args, "--device", "cuda:1"]
    )
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    assert "--device cuda:1 asked for, but no CUDA device is available" in result.output and not out.exists()


def test_drift_line_says_a_kl_below_zero_beyond_its_interval() -> None:
    from deltarank.cli.evaluate import summary_line

    result = {
        "task": "drift",
        "tuned": "run",
        "model": {"name": "base"},
        "general_loss": 2.49,
        "general_tokens": 9000,
        "general_sequences": 128,
        "base_general_loss": 2.5,
        "general_loss_rise": -0.01,
        "general_loss_rise_ci95": [-0.02, -0.004],
    }
    line = summary_line(result)
    assert line == (
        "run: general-text loss 2.4900 over 9000 tokens of the base model's 128 samples to general prompts "
        "(base 2.5000; forgetting KL(base‖tuned) -0.0100 nats/token [95% CI -0.0200, -0.0040]: below 0 beyond "
        "its 95% interval (a KL divergence is never negative: the forgetting set is not this base model's own "
        "samples))"
    )
    result["general_loss_rise_ci95"] = [-0.02, 0.001]  # reaches 0: a plain estimate
    assert summary_line(result).endswith("nats/token [95% CI -0.0200, +0.0010])")
