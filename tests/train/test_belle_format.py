"""BELLE's data files: single-turn instruction/input/output and multi-turn `conversations` train, with loss on
the assistant turns only; a malformed line stops `train` with one error naming the line, and nothing is written."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from deltarank.cli import main
from deltarank.train.data import read_jsonl
from deltarank.train.formats import IGNORE_INDEX, Encoder
from deltarank.train.trainer import run_training
from tests.reliability.corpus import assert_one_line_error
from tests.train.conftest import train_tokenizer, write_jsonl
from tests.train.tiny_runs import tiny_config

CONVERSATION = {
    "id": "7702",
    "conversations": [
        {"from": "human", "value": "Say hi"},
        {"from": "assistant", "value": "hi"},
        {"from": "human", "value": "Again"},
        {"from": "assistant", "value": "hello"},
    ],
}
# BELLE's single-turn files, e.g. train_0.5M_CN: empty input, Chinese text.
SINGLE_TURN = {"instruction": "把这句话翻译成英文：你好", "input": "", "output": "Hello"}


def test_conversation_trains_assistant_turns_only() -> None:
    tokenizer = train_tokenizer()
    ids, labels = Encoder(tokenizer, 256).encode(CONVERSATION, "conversations")
    text = tokenizer.decode(ids)
    assert text.startswith("<|im_start|>user\nSay hi<|im_end|>\n<|im_start|>assistant\nhi<|im_end|>")
    trained = tokenizer.decode([i for i, label in zip(ids, labels, strict=True) if label != IGNORE_INDEX])
    assert trained == "hi<|im_end|>\nhello<|im_end|>\n"


def test_belle_files_are_detected(tmp_path: Path) -> None:
    assert read_jsonl(write_jsonl(tmp_path / "multi.jsonl", [CONVERSATION] * 2))[0] == "conversations"
    assert read_jsonl(write_jsonl(tmp_path / "single.jsonl", [SINGLE_TURN] * 2))[0] == "alpaca"


@pytest.mark.parametrize(("records", "shape"), [([CONVERSATION], "conversations"), ([SINGLE_TURN], "alpaca")])
def test_belle_file_trains(tiny_lm_dir: Path, tmp_path: Path, records: list[dict], shape: str) -> None:
    data = write_jsonl(tmp_path / "belle.jsonl", records * 4)
    result = run_training(tiny_config(tiny_lm_dir, data, tmp_path / "out", method="lora", seq_len=256))
    assert result.run["data"]["train"]["format"] == shape
    assert result.run["data"]["train"]["records"] == 4
    assert result.final_loss is not None and result.final_loss > 0
    assert (tmp_path / "out" / "adapter_model.safetensors").is_file()


BAD_TURNS = {
    "speaker": ([{"from": "gpt4", "value": "x"}], "line 2: 'conversations'[0] has from 'gpt4'"),
    "value": ([{"from": "human", "value": 3}], "line 2: 'conversations'[0] must be an object with a string"),
    "no_answer": ([{"from": "human", "value": "x"}], "line 2: 'conversations' has no assistant turn"),
    "empty": ([], "line 2: 'conversations' must be a non-empty list"),
}


@pytest.mark.parametrize("case", sorted(BAD_TURNS))
def test_malformed_belle_line_names_the_line(tiny_lm_dir: Path, tmp_path: Path, case: str) -> None:
    turns, problem = BAD_TURNS[case]
    data = tmp_path / "belle.jsonl"
    data.write_text(json.dumps(CONVERSATION) + "\n" + json.dumps({"id": "2", "conversations": turns}) + "\n")
    run_dir = tmp_path / "run"
    args = ["train", "--model", str(tiny_lm_dir), "--data", str(data), "--method", "lora"]
    result = CliRunner().invoke(main, [*args, "--output-dir", str(run_dir), "--device", "cpu"])
    assert_one_line_error(result, data, re.escape(problem))
    assert not run_dir.exists()
