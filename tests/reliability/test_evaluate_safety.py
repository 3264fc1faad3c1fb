"""`evaluate` never measures a training run on the wrong base, and never loads a model before its data is known
to be good (#24 findings 8 and 13).

Two different tiny bases (2 and 3 layers), a LoRA and a full run on the first: `--model` must be the base the
run's run.json records (or be omitted), an adapter that does not fit its base is one error line (not peft's
missing-keys warning), and malformed JSONL is reported before any model or tokenizer loads.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from deltarank.cli import main
from deltarank.errors import InputError
from deltarank.train.models import load_trained, resolve_model
from tests.train.conftest import save_tiny_model

LOSS = ("--data", "builtin:zh-text:test", "--limit", "2", "--seq-len", "32")


@pytest.fixture(scope="module")
def bases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """`a` (2 layers, seed 0), `b` (3 layers, seed 1) and `short` (1 layer): tiny Llamas with tokenizers."""
    root = tmp_path_factory.mktemp("bases")
    return {
        "a": save_tiny_model(root / "a"),
        "b": save_tiny_model(root / "b", seed=1, num_hidden_layers=3),
        "short": save_tiny_model(root / "short", seed=2, num_hidden_layers=1),
    }


def train(base: Path, method: str, out: Path) -> Path:
    args = ["train", "--model", str(base), "--data", "builtin:zh-text", "--method", method, "--output-dir",
            str(out), "--max-steps", "1", "--seq-len", "32", "--batch-size", "2"]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def runs(bases: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A LoRA and a full run of one step on base `a`."""
    root = tmp_path_factory.mktemp("runs")
    return {method: train(bases["a"], method, root / method) for method in ("lora", "full")}


def evaluate(*args: str) -> Result:
    return CliRunner().invoke(main, ["evaluate", *args])


def assert_one_line(result: Result, *parts: str) -> None:
    assert result.exit_code == 1, result.output
    assert result.output.count("\n") == 1 and result.output.startswith("Error: "), result.output
    for part in parts:
        assert part in result.output, result.output


def no_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any model or tokenizer load fail the test: the check must come first."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a model or tokenizer was loaded before the inputs were checked")

    import deltarank.train.models as models

    monkeypatch.setattr(models, "load_model", refuse)
    monkeypatch.setattr(models, "load_tokenizer", refuse)


@pytest.mark.parametrize("method", ["lora", "full"])
def test_another_base_is_refused_before_loading(
    bases: dict[str, Path],
    runs: dict[str, Path],
    tmp_path: Path,
    method: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before: a LoRA adapter of `a` was applied to `b` after peft's missing-keys warning, and a full run
    silently ignored `--model` (only its tokenizer came from it)."""
    no_loading(monkeypatch)
    out = tmp_path / "r.json"
    result = evaluate("--model", str(bases["b"]), "--tuned", str(runs[method]), "-o", str(out), *LOSS)
    assert_one_line(result, f"--model {bases['b']} is not the base model of {runs[method]}", str(bases["a"]))
    assert "(llama (3 layers, hidden 32) vs llama (2 layers, hidden 32): layers 3 vs 2)" in result.output
    assert not out.exists()


def test_the_recorded_base_is_taken_when_model_is_omitted(
    bases: dict[str, Path], runs: dict[str, Path], tmp_path: Path
) -> None:
    omitted = evaluate("--tuned", str(runs["lora"]), "-o", str(tmp_path / "omitted.json"), *LOSS)
    assert omitted.exit_code == 0, omitted.output
    given = evaluate("--model", str(bases["a"]), "--tuned", str(runs["lora"]), "-o", str(tmp_path / "given.json"),
                     *LOSS)  # fmt: skip
    assert given.exit_code == 0, given.output
    first, second = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("omitted", "given"))
    assert Path(first["model"]["directory"]).resolve() == bases["a"].resolve()
    assert first["loss"] == second["loss"]


def test_neither_model_nor_tuned_is_a_usage_error() -> None:
    result = evaluate(*LOSS)
    assert result.exit_code == 2 and "give --model, or --tuned" in result.output


def test_a_moved_base_is_compared_by_architecture(
    bases: dict[str, Path], runs: dict[str, Path], tmp_path: Path
) -> None:
    """A run whose recorded base is gone (copied from another machine): the full run's config.json must match
    `--model`'s architecture."""
    moved = tmp_path / "moved"
    shutil.copytree(runs["full"], moved)
    record = json.loads((moved / "run.json").read_text())
    record["model"] = {"name": "/elsewhere/base", "directory": "/elsewhere/base", "gguf_file": None}
    (moved / "run.json").write_text(json.dumps(record))
    refused = evaluate("--model", str(bases["b"]), "--tuned", str(moved), *LOSS)
    assert_one_line(refused, "records /elsewhere/base")
    missing = evaluate("--tuned", str(moved), *LOSS)
    assert_one_line(missing, "its base model /elsewhere/base is not found here; give it with --model")
    accepted = evaluate("--model", str(bases["a"]), "--tuned", str(moved), *LOSS)
    assert accepted.exit_code == 0, accepted.output


def test_an_unfinished_runs_checkpoint_is_checked_against_its_train_config(
    bases: dict[str, Path], runs: dict[str, Path], tmp_path: Path
) -> None:
    """A checkpoint of a run stopped before run.json was written: train_config.yaml names the base."""
    stopped = tmp_path / "stopped"
    checkpoint = stopped / "checkpoint-1"
    checkpoint.mkdir(parents=True)
    shutil.copy(runs["lora"] / "train_config.yaml", stopped / "train_config.yaml")
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        shutil.copy(runs["lora"] / name, checkpoint / name)
    refused = evaluate("--model", str(bases["b"]), "--tuned", str(checkpoint), *LOSS)
    assert_one_line(refused, "is not the base model of", "train_config.yaml records")
    taken = evaluate("--tuned", str(checkpoint), *LOSS)
    assert taken.exit_code == 0, taken.output


@pytest.mark.parametrize(("other", "problem"), [("b", "adapter tensors missing from the file"),
                                                ("short", "tensors in the file for modules this base lacks")])  # fmt: skip
def test_an_adapter_that_does_not_fit_its_base_is_an_error(
    bases: dict[str, Path], runs: dict[str, Path], tmp_path: Path, other: str, problem: str
) -> None:
    """Without a run.json to check against (a bare adapter), the adapter's own tensors must fit the base:
    before, peft warned about missing keys (and said nothing of unexpected ones) and the number was given."""
    bare = tmp_path / "adapter"
    bare.mkdir()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        shutil.copy(runs["lora"] / name, bare / name)
    with pytest.raises(InputError, match=f"does not fit this base model .*{problem}"):
        load_trained(resolve_model(str(bases[other])), bare)
    result = evaluate("--model", str(bases[other]), "--tuned", str(bare), *LOSS)
    assert_one_line(result, "does not fit this base model", problem)
    fits = evaluate("--model", str(bases["a"]), "--tuned", str(bare), *LOSS)
    assert fits.exit_code == 0, fits.output


GOOD = json.dumps({"prompt": "What is 2 + 2?", "completion": " 4"})
JSONL_CASES: dict[str, tuple[bytes, str]] = {
    "invalid_json": (f'{GOOD}\n{GOOD}\n{{"prompt": "x", completion\n'.encode(), "line 3: invalid JSON"),
    "mixed_shapes": (f'{GOOD}\n{{"text": "x"}}\n'.encode(), "line 2: a text record in a file of"),
    "no_known_fields": (f'{GOOD}\n{{"question": "x"}}\n'.encode(), "line 2:"),
    "empty": (b"\n\n", "no records"),
}


@pytest.mark.parametrize("case", sorted(JSONL_CASES))
def test_malformed_jsonl_is_reported_before_any_model_loads(
    bases: dict[str, Path], tmp_path: Path, case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: read only by the loss measurement, after the model had loaded (~23 s for SmolLM2)."""
    content, problem = JSONL_CASES[case]
    data = tmp_path / "held_out.jsonl"
    data.write_bytes(content)
    no_loading(monkeypatch)
    result = evaluate("--model", str(bases["a"]), "--data", str(data), "-o", str(tmp_path / "r.json"))
    assert_one_line(result, str(data), problem)
    assert not (tmp_path / "r.json").exists()


def test_an_output_inside_the_run_it_evaluates_is_refused(
    runs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: `-o RUN/run.json --force` replaced the run's own record with the evaluation result."""
    no_loading(monkeypatch)
    record = runs["lora"] / "run.json"
    before = record.read_bytes()
    result = evaluate("--tuned", str(runs["lora"]), "-o", str(record), "--force", *LOSS)
    assert_one_line(result, f"-o {record}: lies inside the input {runs['lora']}")
    assert record.read_bytes() == before
