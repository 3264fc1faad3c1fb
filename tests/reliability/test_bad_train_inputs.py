"""`train` with malformed data or a bad config file: one `Error:` line naming the file (and the line or the key),
and no output directory is created."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from deltarank.cli import main
from tests.reliability.corpus import assert_one_line_error
from tests.train.conftest import save_tiny_model

GOOD = json.dumps({"prompt": "What is 2 + 2?", "completion": " 4"})


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama with its tokenizer (nothing is trained: every case fails before training)."""
    return save_tiny_model(tmp_path_factory.mktemp("tiny_lm"))


JSONL_CASES: dict[str, tuple[bytes, str]] = {
    "invalid_json": (f'{GOOD}\n{GOOD}\n{{"prompt": "x", completion\n'.encode(), "line 3: invalid JSON"),
    "mixed_shapes": (f'{GOOD}\n\n{{"text": "x"}}\n'.encode(), "line 3: a text record in a file of"),
    "not_an_object": (f"{GOOD}\n[1, 2]\n".encode(), "line 2: expected a JSON object, got list"),
    "wrong_field_type": (f'{GOOD}\n{{"prompt": 1, "completion": 2}}\n'.encode(), "line 2: 'prompt' and"),
    "not_utf8": (f"{GOOD}\n".encode() + b"\xff\xfe{}\n", "line 2: not UTF-8 text"),
    "empty": (b"\n\n", "no records"),
}


@pytest.mark.parametrize("name", sorted(JSONL_CASES))
def test_malformed_jsonl_names_file_and_line(tmp_path: Path, model_dir: Path, name: str) -> None:
    content, problem = JSONL_CASES[name]
    data = tmp_path / "data.jsonl"
    data.write_bytes(content)
    run_dir = tmp_path / "run"
    args = ["train", "--model", str(model_dir), "--data", str(data), "--method", "lora"]
    result = CliRunner().invoke(main, [*args, "--output-dir", str(run_dir), "--device", "cpu"])
    assert_one_line_error(result, data, problem)
    assert not run_dir.exists()


CONFIG_CASES: dict[str, tuple[str, bytes, str]] = {
    "yaml_unknown_key": (
        "run.yaml",
        b"method: lora\nmax_step: 3\n",
        "unknown key 'max_step'; did you mean 'max_steps'",
    ),
    "toml_unknown_key": (
        "run.toml",
        b'method = "lora"\nlearning_rate = 1e-4\n',
        "unknown key 'learning_rate'",
    ),
    "yaml_dashed_typo": ("run.yml", b"lora-rank: 8\n", "unknown key 'lora-rank'; did you mean 'lora_r'"),
    "not_a_mapping": ("run.yaml", b"- a\n- b\n", "must hold a mapping"),
    "invalid_yaml": ("run.yaml", b"method: [lora\n", "cannot parse config"),
    "invalid_toml": ("run.toml", b"method = \n", "cannot parse config"),
    "not_utf8": ("run.yaml", b"\xff\xfe\x00m", "not UTF-8 text"),
    "unknown_suffix": ("run.json", b"{}", "must end in .yaml, .yml or .toml"),
}


@pytest.mark.parametrize("name", sorted(CONFIG_CASES))
def test_bad_config_file_names_file_and_key(tmp_path: Path, name: str) -> None:
    filename, content, problem = CONFIG_CASES[name]
    config = tmp_path / filename
    config.write_bytes(content)
    run_dir = tmp_path / "run"
    args = [
        "train",
        "--config",
        str(config),
        "--model",
        "m",
        "--data",
        "d.jsonl",
        "--output-dir",
        str(run_dir),
    ]
    assert_one_line_error(CliRunner().invoke(main, args), config, problem)
    assert not run_dir.exists()
