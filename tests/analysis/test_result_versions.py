"""Older result layouts still read: deltarank.similarity/1 named the subspace sizes `top`; /2 names them `sizes`,
as the option --sizes does. A /1 file (written here by hand, as that version wrote it) reads into the same
record as its /2 twin and writes back as /2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from deltarank.analysis.results import SimilarityResult, read_result
from deltarank.analysis.results.similarity import SCHEMA_1
from deltarank.cli import main
from deltarank.errors import InputError
from tests.figures.synthetic import similarity_result


def _version_1(result: SimilarityResult) -> dict[str, object]:
    """The file deltarank.similarity/1 wrote for this result: the same keys, `top` in place of `sizes`."""
    data = json.loads(result.to_json())
    return {("top" if key == "sizes" else key): value for key, value in data.items()} | {"schema": SCHEMA_1}


def test_a_new_similarity_file_names_the_sizes_as_the_option_does() -> None:
    data = json.loads(similarity_result().to_json())
    assert data["schema"] == "deltarank.similarity/2" == SimilarityResult.SCHEMA
    assert data["sizes"] == [1, 2, 4] and "top" not in data


def test_a_version_1_similarity_file_reads_with_the_same_values(tmp_path: Path) -> None:
    new = similarity_result()
    old = tmp_path / "old.json"
    old.write_text(json.dumps(_version_1(new)))
    assert json.loads(old.read_text())["top"] == [1, 2, 4]  # the hand-written file is version 1
    for read in (SimilarityResult.from_json(old), read_result(old)):
        assert isinstance(read, SimilarityResult)
        assert read == new and read.sizes == (1, 2, 4) and read.schema == SimilarityResult.SCHEMA
        assert read.module_means(4) == new.module_means(4)
    rewritten = json.loads(SimilarityResult.from_json(old).to_json())  # written back in the current layout
    assert rewritten["schema"] == "deltarank.similarity/2" and "sizes" in rewritten and "top" not in rewritten


def test_compare_reads_a_version_1_file_beside_a_version_2_one(tmp_path: Path) -> None:
    old, new = tmp_path / "old.json", tmp_path / "new.json"
    old.write_text(json.dumps(_version_1(similarity_result())))
    similarity_result().to_json(new)
    result = CliRunner().invoke(main, ["compare", str(old), str(new), "--label", "old", "--label", "new"])
    assert result.exit_code == 0, result.output
    header, _, *rows = result.output.splitlines()
    assert header.split()[:2] == ["module", "matrices"]
    assert all(row.split()[2:4] == row.split()[4:6] for row in rows)  # same φ from both versions


def test_a_version_1_key_in_a_version_2_file_is_refused(tmp_path: Path) -> None:
    data = json.loads(similarity_result().to_json())
    data["top"] = data.pop("sizes")
    with pytest.raises(InputError, match=r"malformed deltarank\.similarity/2 result file"):
        SimilarityResult.from_json(json.dumps(data))
