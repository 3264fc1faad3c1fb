"""Every file format deltarank writes has exactly one writer and one reader, and none holds NaN.

`deltarank.io.file_formats.FORMATS` lists each format with the functions (or classes) that write it, all in one
module, and the one function that reads it (None for files written for people: reports, tables, figures). The
source scan finds every function of the package that writes a file (through `deltarank.io.atomic`,
`Path.write_text`, `open` for writing, safetensors' `save_file`): each must be a listed writer, or one of `NOT_FORMATS` (the write
primitives, images, a sandbox's program, a kernel counter). A new writer of an existing format, or a new
format, fails here until it is listed; two writers of one format cannot both be listed.
"""

from __future__ import annotations

import ast
import importlib
import math
from pathlib import Path

import pytest

import deltarank
from deltarank.errors import OutputError
from deltarank.io.atomic import finite, json_text, write_json, write_jsonl
from deltarank.io.file_formats import FORMATS

PACKAGE = Path(deltarank.__file__).parent
NOT_FORMATS = {
    "deltarank.io.atomic:write_atomic": "the atomic write primitive every writer uses",
    "deltarank.io.atomic:write_json": "the JSON primitive (NaN refused)",
    "deltarank.io.atomic:write_jsonl": "the JSON-lines primitive (NaN refused)",
    "deltarank.figures.save:_save_one": "figure images (pdf, png, svg)",
    "deltarank.evaluation.verdict:_start_sandboxed": "the program a sandbox runs, in its temporary directory",
    "deltarank.train.callbacks:_reset_peak": "/proc/self/clear_refs: resets the kernel's peak-memory counter",
}
PRIMITIVES = {"write_atomic", "write_json", "write_jsonl", "replace_atomic", "atomic_directory", "save_file"}


def _writes(call: ast.Call) -> bool:
    func = call.func
    name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
    if name in PRIMITIVES or name in ("write_text", "write_bytes"):
        return True
    if name == "open":
        modes = [a.value for a in call.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
        modes += [
            k.value.value for k in call.keywords if k.arg == "mode" and isinstance(k.value, ast.Constant)
        ]
        return any(isinstance(m, str) and set(m) & set("wax") for m in modes)
    return False


def writing_definitions() -> set[str]:
    """`module:name` of every top-level function or class of the package that writes a file."""
    found = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.FunctionDef | ast.ClassDef) and any(
                isinstance(call, ast.Call) and _writes(call) for call in ast.walk(node)
            ):
                found.add(f"{module}:{node.name}")
    return found


def resolve(target: str) -> object:
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


def test_every_file_writer_is_the_one_writer_of_a_listed_format() -> None:
    listed = {writer for writers, _, _ in FORMATS.values() for writer in writers}
    found = writing_definitions()
    unlisted = found - listed - set(NOT_FORMATS)
    assert not unlisted, f"functions that write files but are no listed format's writer: {sorted(unlisted)}"
    assert listed <= found, f"listed writers that write nothing (any more): {sorted(listed - found)}"
    assert len(listed) == sum(len(w) for w, _, _ in FORMATS.values()), "a function writes two formats"


@pytest.mark.parametrize("name", list(FORMATS))
def test_each_format_has_one_writing_module_and_one_reader(name: str) -> None:
    writers, reader, _ = FORMATS[name]
    assert len({w.split(":")[0] for w in writers}) == 1, f"{name}: written from several modules"
    for target in (*writers, *([reader] if reader else [])):
        assert callable(resolve(target)), target


@pytest.mark.parametrize("name", [n for n, (_, _, json_file) in FORMATS.items() if json_file])
def test_json_formats_are_written_through_a_writer_that_refuses_nan(name: str) -> None:
    """Each JSON writer goes through json_text/write_json/write_jsonl or the result base's to_json (all
    `allow_nan=False`), never a bare json.dumps."""
    refusing = {"json_text", "write_json", "write_jsonl", "to_json"}
    for writer in FORMATS[name][0]:
        module, qualname = writer.split(":")
        path = PACKAGE.parent / (module.replace(".", "/") + ".py")
        node = next(
            n
            for n in ast.parse(path.read_text(encoding="utf-8")).body
            if getattr(n, "name", None) == qualname
        )
        calls = {
            c.func.id if isinstance(c.func, ast.Name) else getattr(c.func, "attr", "")
            for c in ast.walk(node)
            if isinstance(c, ast.Call)
        }
        assert calls & refusing, f"{writer} writes JSON without a NaN-refusing writer"
        if qualname != "ResultFile":
            assert "dumps" not in calls, f"{writer} calls json.dumps itself"


def test_the_json_writers_refuse_nan_and_infinity(tmp_path: Path) -> None:
    for bad in (float("nan"), math.inf, -math.inf):
        with pytest.raises(OutputError, match="NaN or infinite"):
            write_json(tmp_path / "a.json", {"value": [1.0, bad]})
        with pytest.raises(OutputError, match="NaN or infinite"):
            write_jsonl(tmp_path / "a.jsonl", [{"ok": 1}, {"value": bad}])
        with pytest.raises(OutputError):
            json_text({"value": bad})
    assert not list(tmp_path.iterdir())  # nothing half-written
    # run.json and the training log keep a run whatever it measured: a NaN loss is written as null
    assert finite({"loss": float("nan"), "steps": [1.0, math.inf], "name": "x"}) == {
        "loss": None,
        "steps": [1.0, None],
        "name": "x",
    }


def test_schema_names_are_declared_once() -> None:
    """A schema string appears in one module of the package only (readers import it from there)."""
    seen: dict[str, list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                text = node.value
                if text.startswith("deltarank.") and text.count("/") == 1 and text.split("/")[1].isdigit():
                    seen.setdefault(text, []).append(str(path.relative_to(PACKAGE.parent)))
    repeated = {schema: files for schema, files in seen.items() if len(files) > 1}
    assert not repeated, f"schema names declared more than once: {repeated}"
