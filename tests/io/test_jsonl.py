"""iter_jsonl, the one JSONL reader: records in order with their line numbers, blank lines skipped, and every
bad line or unreadable file an InputError naming the file (and the line)."""

from __future__ import annotations

from pathlib import Path

import pytest

from deltarank.errors import InputError
from deltarank.io.atomic import write_jsonl
from deltarank.io.jsonl import iter_jsonl


def test_records_come_in_file_order_with_their_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_text('{"a": 1}\n\n   \n{"b": "x\u2028y\u0085z"}\r\n{"c": [1, 2]}', encoding="utf-8")
    # blank lines are skipped but counted; a JSON string may hold line separators; no final newline needed
    assert list(iter_jsonl(path, "the set")) == [
        (1, {"a": 1}),
        (4, {"b": "x\u2028y\u0085z"}),
        (5, {"c": [1, 2]}),
    ]


def test_what_write_jsonl_writes_reads_back(tmp_path: Path) -> None:
    records = [{"text": "première\u2028ligne"}, {"ids": [0, 1, 2]}, {}]
    write_jsonl(tmp_path / "w.jsonl", records)
    assert [r for _, r in iter_jsonl(tmp_path / "w.jsonl", "the set")] == records


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"a": 1}\n{"a": 2\n', r"line 2: invalid JSON \(Expecting ',' delimiter\)"),
        (b'{"a": 1}\n\n[1, 2]\n', r"line 3: expected a JSON object, got list"),
        (b'"text"\n', r"line 1: expected a JSON object, got str"),
        (b'{"a": 1}\n\xff\xfe{}\n', r"line 2: not UTF-8 text"),
        (b"[" * 100_000 + b"\n", r"line 1: invalid JSON \(nested too deeply\)"),
        (b'{"n": ' + b"9" * 5000 + b"}\n", r"line 1: invalid JSON \(Exceeds the limit"),
    ],
)
def test_a_bad_line_is_named_by_its_number(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    with pytest.raises(InputError, match=message) as info:
        list(iter_jsonl(path, "the set"))
    assert info.value.path == str(path)


def test_a_line_beyond_max_chars_is_refused_before_parsing(tmp_path: Path) -> None:
    path = tmp_path / "long.jsonl"
    path.write_text('{"a": "xx"}\n' + '{"a": "' + "x" * 20 + '"}\n')  # 11 and 29 characters
    with pytest.raises(InputError, match="line 2: longer than 12 characters"):
        list(iter_jsonl(path, "the set", max_chars=12))
    assert len(list(iter_jsonl(path, "the set", max_chars=100))) == 2


def test_a_caller_that_stops_early_leaves_later_lines_unchecked(tmp_path: Path) -> None:
    path = tmp_path / "head.jsonl"
    path.write_text('{"a": 1}\nnot json\n')
    assert next(iter_jsonl(path, "the set")) == (1, {"a": 1})


@pytest.mark.parametrize("make", ["missing", "directory"])
def test_an_unreadable_path_is_an_input_error(tmp_path: Path, make: str) -> None:
    path = tmp_path / "set.jsonl"
    if make == "directory":
        path.mkdir()
    with pytest.raises(InputError, match=r"cannot read the general-text set \(") as info:
        list(iter_jsonl(path, "the general-text set"))
    assert info.value.path == str(path)
