"""`--force` can never remove an input: an output that is, contains or lies inside an input is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from deltarank.errors import OutputError
from deltarank.io.atomic import refuse_overlap


@pytest.fixture
def inputs(tmp_path: Path) -> dict[str, Path]:
    model = tmp_path / "work" / "base"
    model.mkdir(parents=True)
    data = tmp_path / "work" / "pc.jsonl"
    data.write_text("{}\n")
    return {"model": model, "data": data}


@pytest.mark.parametrize(
    ("output", "relation"),
    [("work", "contains"), ("work/base", "is"), ("work/base/run", "lies inside"), ("work/pc.jsonl", "is")],
)
def test_overlapping_outputs_are_refused(
    tmp_path: Path, inputs: dict[str, Path], output: str, relation: str
) -> None:
    with pytest.raises(OutputError, match=relation):
        refuse_overlap(tmp_path / output, inputs.values())


def test_a_sibling_output_and_builtin_names_pass(tmp_path: Path, inputs: dict[str, Path]) -> None:
    refuse_overlap(tmp_path / "work" / "run", [*inputs.values(), "smollm2-135m", None, "builtin:zh-text"])
