"""`compare` and `plot` read result JSON files: a bad one gives one `Error:` line naming it, and nothing is written."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from deltarank.analysis.engine import spectrum
from deltarank.cli import main
from tests.reliability.corpus import (
    assert_one_line_error,
    random_weights,
    tree_state,
    tuned_from,
    write_safetensors,
)


@pytest.fixture(scope="module")
def good_result(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A real result of two tiny checkpoints, as a dict."""
    root = tmp_path_factory.mktemp("good")
    weights = random_weights(seed=0)
    base = write_safetensors(root / "base.safetensors", weights)
    tuned = write_safetensors(root / "tuned.safetensors", tuned_from(weights, seed=1))
    result: dict[str, object] = json.loads(spectrum(base, tuned, device="cpu").to_json())
    return result


def _broken(result: dict[str, object], **changes: object) -> str:
    data = {**result, **changes}
    return json.dumps({k: v for k, v in data.items() if v is not None})


BAD_FILES: dict[str, tuple[Callable[[dict[str, object]], bytes | None], str]] = {
    "missing": (lambda r: None, "cannot read result file"),
    "random_bytes": (lambda r: np.random.default_rng(0).bytes(300), "not a JSON result file"),
    "not_json": (lambda r: b"spectrum: yes\n", r"not a JSON result file \(Expecting value at line 1\)"),
    "other_schema": (
        lambda r: _broken(r, schema="other/1").encode(),
        r"not a deltarank result file \(schema 'other/1'\); known schemas: deltarank.spectrum/1",
    ),
    "missing_field": (
        lambda r: _broken(r, base=None).encode(),
        "malformed .* result file .*missing field 'base'",
    ),
    "matrices_not_a_list": (lambda r: _broken(r, matrices=5).encode(), "malformed .* result file"),
    "matrix_missing_field": (lambda r: _broken(r, matrices=[{"name": "x"}]).encode(), "missing field"),
}


@pytest.mark.parametrize("command", ["compare", "plot"])
@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_result_file(tmp_path: Path, good_result: dict[str, object], name: str, command: str) -> None:
    build, problem = BAD_FILES[name]
    bad = tmp_path / f"{name}.json"
    content = build(good_result)
    if content is not None:
        bad.write_bytes(content)
    good = tmp_path / "good.json"
    good.write_text(json.dumps(good_result))
    if command == "compare":
        args = ["compare", str(good), str(bad), "-o", str(tmp_path / "table.csv")]
    else:
        args = ["plot", str(good), str(bad), "-o", str(tmp_path / "figures")]
    before = tree_state(tmp_path)
    assert_one_line_error(CliRunner().invoke(main, args), bad, problem)
    assert tree_state(tmp_path) == before  # no table, no figure directory
