"""`evaluate` says how far it is: `evaluate: i/N example (p%), elapsed, ~left` lines on stderr when it is not a
terminal (the last one always), for every task (accuracy, HumanEval generation, loss batches)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from deltarank.cli import main
from deltarank.evaluation.loss import held_out_loss
from deltarank.train.models import load_model, load_tokenizer, resolve_model
from tests.train.conftest import save_tiny_model

FINAL = re.compile(r"^evaluate: (\d+)/(\d+) example \(100%\), \d+ s elapsed$", re.MULTILINE)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny_lm"))


@pytest.mark.parametrize(
    ("data", "limit"),
    [("builtin:zh-sentiment:test", "3"), ("builtin:humaneval", "2"), ("builtin:zh-text:test", "10")],
)
def test_every_task_ends_with_a_progress_line(model_dir: Path, data: str, limit: str) -> None:
    """Before: nothing at all on stderr until the result (40 examples can take half an hour)."""
    args = ["evaluate", "--model", str(model_dir), "--data", data, "--limit", limit, "--max-new-tokens", "2",
            "--seq-len", "32"]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert [m.groups() for m in FINAL.finditer(result.stderr)] == [(limit, limit)], result.stderr


def test_loss_reports_each_batch(model_dir: Path) -> None:
    """The loss's hook is called after each batch of 8 sequences with the sequences done so far."""
    source = resolve_model(str(model_dir))
    model, tokenizer = load_model(source).eval(), load_tokenizer(source)
    seen: list[tuple[int, int]] = []
    loss = held_out_loss(model, tokenizer, "builtin:zh-text:test", 16, 19, lambda d, t: seen.append((d, t)))
    assert seen == [(8, 19), (16, 19), (19, 19)] and loss["examples"] == 19
