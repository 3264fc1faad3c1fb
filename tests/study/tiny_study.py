"""A tiny study for the study tests: the tests' tiny Llama with its trained tokenizer, a small JSONL data set,
held-out set and diversity prompts; a 2 × 2 grid (method {full, lora} × data_size {4, 8}, 2 steps each)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from tests.train.conftest import save_tiny_model, write_jsonl

# run.json fields that measure the machine rather than the run: left out when two studies are compared
MACHINE_FIELDS = ("seconds", "tokens_per_second", "peak_memory_bytes", "elapsed")


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread, and on a busy machine two threads wait on each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama + tokenizer directory (read-only for tests)."""
    return save_tiny_model(tmp_path_factory.mktemp("study_lm"))


def tiny_study(folder: Path, model: Path, **changes: Any) -> dict[str, Any]:
    """The study mapping of the 2 × 2 grid (`changes` replace top-level sections or `base:` keys)."""
    data = write_jsonl(
        folder / "train.jsonl",
        [{"prompt": f"What is {i} + {i}?", "completion": f" {2 * i}"} for i in range(12)],
    )
    held_out = write_jsonl(
        folder / "held_out.jsonl",
        [{"prompt": f"What is {i} + 1?", "completion": f" {i + 1}"} for i in range(6)],
    )
    prompts = write_jsonl(
        folder / "prompts.jsonl", [{"prompt": "def add(a, b):"}, {"prompt": "class Point:"}]
    )
    study: dict[str, Any] = {
        "name": "tiny",
        "base": {
            "model": str(model),
            "data": str(data),
            "max_steps": 2,
            "batch_size": 2,
            "seq_len": 32,
            "save_steps": 1,
            "lr": 1e-3,
            "seed": 0,
            "progress": "none",
        },
        "grid": {"method": ["full", "lora"], "data_size": [4, 8]},
        "evaluate": {
            "held_out": str(held_out),
            "held_out_sequences": 4,
            "general_tokens": 8,
            "diversity_prompts": str(prompts),
            "diversity_n": 2,
            "diversity_samples": 2,
            "max_new_tokens": 4,
            "seq_len": 32,
        },
    }
    for key, value in changes.items():
        if key in study:
            study[key] = value
        else:
            study["base"][key] = value
    return study


def write_study_file(path: Path, study: Mapping[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(dict(study), sort_keys=False), encoding="utf-8")
    return path


def comparable(value: Any) -> Any:
    """A study.json document without the fields that time or size up the machine (wall clock, tokens per
    second, peak memory): what two runs of the same study must agree on exactly."""
    if isinstance(value, Mapping):
        return {
            k: comparable(v) for k, v in value.items() if not any(field in str(k) for field in MACHINE_FIELDS)
        }
    if isinstance(value, list):
        return [comparable(v) for v in value]
    return value
