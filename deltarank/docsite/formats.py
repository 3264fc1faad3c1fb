"""The file formats page: every format deltarank writes, its writer and reader, its schema and its fields.

The list of formats is `deltarank.io.file_formats.FORMATS` (which `tests/test_file_formats.py` checks: name -> writers, reader, JSON);
it is passed in, never copied. What a format holds is read from the code: its schema name from the writer's and
reader's modules, its summary from their docstrings, and the fields of every typed record (a frozen dataclass
with metadata "help" on each field, nested records included) from the dataclasses themselves.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
import typing
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from deltarank.docsite.markdown import (
    NO_VALUE,
    anchor,
    code,
    field_default,
    field_help,
    field_type,
    prose,
    summary,
    table,
)
from deltarank.io.file_formats import FileFormat

# What a schema name looks like (`deltarank.spectrum/1`); the names themselves are read from the code.
SCHEMA_PATTERN = re.compile(r"^deltarank\.[\w-]+/\d+$")
# A format as `deltarank.io.file_formats.FORMATS` lists it: writers ("module:name"), reader or None, JSON.
FormatSpec = FileFormat
PAGE = "formats.md"


def resolve(target: str) -> Any:
    """The object a `module:name` target names."""
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


def schemas_of(targets: Sequence[str]) -> list[str]:
    """The schema names declared in the modules of `targets` (module-level strings such as `SCHEMA`)."""
    found: list[str] = []
    for module_name in dict.fromkeys(target.split(":")[0] for target in targets):
        for value in vars(importlib.import_module(module_name)).values():
            if isinstance(value, str) and SCHEMA_PATTERN.match(value) and value not in found:
                found.append(value)
    return found


def record_tables(cls: type, level: int = 4) -> str:
    """One field table per dataclass reachable from `cls` (itself first, then its nested records): field,
    type, default and help; fields kept in memory only (metadata "json": False) are left out."""
    parts = []
    for record in _records(cls, []):
        rows = [
            (code(f.name), code(field_type(f)), code(field_default(f)), field_help(record, f))
            for f in dataclasses.fields(record)
            if f.metadata.get("json", True)
        ]
        parts.append(f"{'#' * level} {record.__name__}\n\n{summary(record)}")
        parts.append(table(("field", "type", "default", "help"), rows))
    return "\n\n".join(parts)


def _records(cls: type, seen: list[type]) -> list[type]:
    """`cls` and the dataclasses its field types name, depth first, each once."""
    if cls in seen:
        return []
    seen.append(cls)
    found = [cls]
    try:
        hints = typing.get_type_hints(cls)
    except (NameError, TypeError):  # an annotation only a type checker can resolve: no nested tables
        hints = {}
    for f in dataclasses.fields(cls):
        for inner in _dataclasses_in(hints.get(f.name)):
            found += _records(inner, seen)
    return found


def _dataclasses_in(hint: Any) -> Iterator[type]:
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        yield hint
    for arg in typing.get_args(hint):
        yield from _dataclasses_in(arg)


def format_section(name: str, spec: FormatSpec, families: Mapping[str, type]) -> str:
    """The section of one format: what writes and reads it, its schema, summary and fields.

    Args:
        name: The format's name in the list.
        spec: Its writers, reader and whether it is JSON without NaN.
        families: Schema name -> result class of the result families (`deltarank.analysis.results.read`),
            described one by one under the format whose writer is their common base.
    """
    writers, reader, json_file = spec
    targets = [*writers, *([reader] if reader else [])]
    objects = [resolve(target) for target in targets]
    own = [s for s in schemas_of(targets) if s not in families] if json_file else []
    facts = [
        "- written by " + ", ".join(code(w) for w in writers),
        "- read by " + (code(reader) if reader else "people (no reader in deltarank)"),
        "- JSON, NaN and infinity refused" if json_file else "- not JSON (or not only)",
        *(["- schema " + ", ".join(code(s) for s in own)] if own else []),
    ]
    module = importlib.import_module(writers[0].split(":")[0])
    lines = [f"## {name}", summary(objects[0]), "\n".join(facts), prose(module.__doc__)]
    typed = [obj for obj in objects if isinstance(obj, type) and dataclasses.is_dataclass(obj)]
    if typed and not any(issubclass(obj, tuple(families.values())) for obj in typed):
        lines.append(record_tables(typed[0], level=3))
    if any(_is_base_of(obj, families) for obj in objects):
        lines += [family_section(schema, cls) for schema, cls in families.items()]
    return "\n\n".join(line for line in lines if line)


def _is_base_of(obj: Any, families: Mapping[str, type]) -> bool:
    return isinstance(obj, type) and all(issubclass(cls, obj) for cls in families.values())


def family_section(schema: str, cls: type) -> str:
    """The section of one result family: its schema, summary and every record's fields."""
    return f"### {schema}\n\n`{cls.__module__}.{cls.__name__}`\n\n" + record_tables(cls, level=4)


def formats_page(formats: Mapping[str, FormatSpec], families: Mapping[str, type]) -> str:
    """The file formats page: an index, then one section per format (result families inside theirs)."""
    index = table(
        ("format", "schema", "reader"),
        (
            (
                f"[{name}](#{anchor(name)})",
                ", ".join(code(s) for s in schemas_of([*w, *([r] if r else [])]) if j) or NO_VALUE,
                code(r) if r else "people",
            )
            for name, (w, r, j) in formats.items()
        ),
    )
    intro = (
        "# File formats\n\nEvery file deltarank writes has exactly one writer and one reader, and no JSON file "
        "holds NaN or infinity (`tests/test_file_formats.py` lists the formats and fails on a writer it does not "
        "list). Result files carry a `schema` name; their layouts are contracts other tools read. This page is "
        "generated from that list and from the typed records' dataclass fields."
    )
    sections = [format_section(name, spec, families) for name, spec in formats.items()]
    return "\n\n".join([intro, index, *sections]) + "\n"


def format_link(name: str, depth: int = 1) -> str:
    """A link to a format's section of the formats page from a page `depth` folders down."""
    return f"[{name}]({'../' * depth}{PAGE}#{anchor(name)})"
