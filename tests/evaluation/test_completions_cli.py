"""`deltarank evaluate --completions FILE.jsonl --execute` scores given completions without a model: pass@k
with the unbiased estimator, the isolation mode and limits in the result; malformed files and bad limits stop
with one line before anything runs (#24 finding 13)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from deltarank.cli import main
from deltarank.evaluation import sandbox
from deltarank.train.builtin_humaneval import problems

needs_bwrap = pytest.mark.skipif(
    sandbox.bwrap_problem() is not None, reason=f"no bubblewrap sandbox here: {sandbox.bwrap_problem()}"
)
BASE = ["evaluate", "--data", "builtin:humaneval", "--execute"]


def write(path: Path, rows: list[object]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


@needs_bwrap
def test_given_completions_are_scored_with_pass_at_k(tmp_path: Path) -> None:
    first, second = problems()[:2]
    rows = [{"task_id": first.task_id, "completion": first.canonical_solution if i < 3 else "    return None\n"}
            for i in range(10)]  # fmt: skip
    rows += [{"task_id": second.task_id, "completion": "    return None\n"} for _ in range(10)]
    out = tmp_path / "r.json"
    result = CliRunner().invoke(
        main, [*BASE, "--completions", str(write(tmp_path / "c.jsonl", rows)), "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    found = json.loads(out.read_text())
    assert found["examples"] == 20 and found["tasks"] == 2 and found["passed"] == 3
    assert found["pass@1"] == pytest.approx((0.3 + 0.0) / 2)
    assert found["pass@10"] == pytest.approx(0.5) and "pass@100" not in found
    assert found["per_task"] == {first.task_id: {"n": 10, "c": 3}, second.task_id: {"n": 10, "c": 0}}
    assert found["isolation"].startswith("bubblewrap:") and found["limits"]["memory_mb"] == 512
    assert found["model"] is None and len(found["problems"]) == 20
    assert "pass@1 0.150" in result.output


BAD_FILES = {
    "not_json": (["{oops"], "line 1: invalid JSON"),
    "missing_field": ([{"task_id": "HumanEval/0"}], 'line 1: needs "task_id" and "completion"'),
    "unknown_task": ([{"task_id": "HumanEval/0", "completion": ""}, {"task_id": "X/1", "completion": ""}],
                     "line 2: unknown task_id 'X/1'"),
    "empty": ([""], "no completions in the file"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_a_malformed_completions_file_stops_before_anything_runs(tmp_path: Path, case: str) -> None:
    rows, problem = BAD_FILES[case]
    out = tmp_path / "r.json"
    path = write(tmp_path / "c.jsonl", rows)
    result = CliRunner().invoke(main, [*BASE, "--completions", str(path), "-o", str(out)])
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    assert problem in result.output and not out.exists()


@pytest.mark.parametrize(
    ("option", "value"),
    [("--timeout", "nan"), ("--timeout", "inf"), ("--timeout", "0"), ("--timeout", "601"), ("--timeout", "1e9"),
     ("--memory-mb", "63"), ("--memory-mb", "100000000")],
)  # fmt: skip
def test_limits_out_of_range_are_usage_errors(tmp_path: Path, option: str, value: str) -> None:
    path = write(tmp_path / "c.jsonl", [{"task_id": "HumanEval/0", "completion": ""}])
    result = CliRunner().invoke(main, [*BASE, "--completions", str(path), option, value])
    assert result.exit_code == 2 and f"Invalid value for '{option}'" in result.output, result.output


def test_options_that_do_not_apply_to_given_completions_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "c.jsonl", [{"task_id": "HumanEval/0", "completion": ""}])
    for extra in (["--limit", "3"], ["--model", "smollm2-135m"]):
        result = CliRunner().invoke(main, [*BASE, "--completions", str(path), *extra])
        assert result.exit_code == 2 and "--completions scores given" in result.output, result.output
    result = CliRunner().invoke(main, ["evaluate", "--data", "builtin:humaneval", "--completions", str(path)])
    assert result.exit_code == 2 and "--execute" in result.output


def test_without_bubblewrap_execute_is_refused_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sandbox, "bwrap_problem", lambda: "bwrap not found")
    first = problems()[0]
    path = write(tmp_path / "c.jsonl", [{"task_id": first.task_id, "completion": first.canonical_solution}])
    out = tmp_path / "r.json"
    refused = CliRunner().invoke(main, [*BASE, "--completions", str(path), "-o", str(out)])
    assert refused.exit_code == 1 and refused.output.count("\n") == 1 and not out.exists()
    assert "apt install bubblewrap" in refused.output and "--unsafe-no-sandbox" in refused.output
    unsafe = CliRunner().invoke(
        main, [*BASE, "--completions", str(path), "-o", str(out), "--unsafe-no-sandbox"]
    )
    assert unsafe.exit_code == 0, unsafe.output
    found = json.loads(out.read_text())
    assert (
        found["isolation"] == sandbox.UNSAFE_MODE
        and found["passed"] == 1
        and math.isclose(found["pass@1"], 1)
    )
