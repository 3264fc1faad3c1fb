"""The one base of every result family: frozen dataclass records, versioned JSON, atomic writes.

A result file is one JSON object whose `schema` field names its layout (`deltarank.spectrum/1`,
`deltarank.intruders/1`, ...); its head is `schema` and `deltarank_version`, its tail the `skipped` tensors.
Records go to and from JSON by their field types (tuples become lists and back, nested records recurse), so a
family declares its fields and nothing else. Layouts are contracts other tools read: keep field names stable.
A renamed key bumps the family's schema version, and the family keeps reading the older version: its `RENAMED`
maps the older schema name to {old key: new key} of the top-level keys, applied on reading.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from deltarank.errors import InputError
from deltarank.io.atomic import json_text, write_atomic


class ModuleRecord(Protocol):
    """A per-matrix record: named by its module type."""

    @property
    def module(self) -> str: ...


R = TypeVar("R", bound="Record")
F = TypeVar("F", bound="ResultFile[Any]")
M = TypeVar("M", bound=ModuleRecord)
_HINTS: dict[type, dict[str, Any]] = {}


class Record:
    """Mixin of a frozen dataclass that serialises to a JSON-ready dict by its field types.

    A field with metadata `{"json": False}` stays in memory only.
    """

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists, nested records dicts)."""
        return {
            f.name: plain(getattr(self, f.name))
            for f in dataclasses.fields(self)  # type: ignore[arg-type]
            if f.metadata.get("json", True)
        }

    @classmethod
    def from_dict(cls: type[R], data: dict[str, Any]) -> R:
        """Inverse of `to_dict`.

        Raises:
            KeyError, TypeError, ValueError: a missing field or a value of the wrong kind.
        """
        hints = _hints(cls)
        unknown = set(data) - set(hints)
        if unknown:
            raise TypeError(f"unknown field(s) {', '.join(sorted(unknown))}")
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            if required and f.name not in data:
                raise KeyError(f.name)
        return cls(**{name: revive(value, hints[name]) for name, value in data.items()})


class ResultFile(Record, Generic[M]):
    """A whole result file: a Record with `schema`, `deltarank_version`, `matrices` and `skipped` fields.

    Subclasses set `SCHEMA` (the class variable) and declare `schema: str = SCHEMA` as their last field; a family
    whose layout changed sets `RENAMED`: older schema name -> {old top-level key: new key}, the versions it still
    reads (a file read in an older version holds the current `schema`, and writes the current layout).
    """

    SCHEMA: ClassVar[str] = ""
    RENAMED: ClassVar[dict[str, dict[str, str]]] = {}
    matrices: tuple[M, ...]

    def by_module(self) -> dict[str, list[M]]:
        """Matrices grouped by module type, in first-seen order."""
        groups: dict[str, list[M]] = {}
        for m in self.matrices:
            groups.setdefault(m.module, []).append(m)
        return groups

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: `schema` and `deltarank_version` first, `skipped` last."""
        body = super().to_dict()
        head = {key: body.pop(key) for key in ("schema", "deltarank_version")}
        skipped = body.pop("skipped", [])
        return head | body | {"skipped": skipped}

    def to_json(self, path: str | Path | None = None) -> str:
        """JSON text (NaN refused: undefined values are stored as null); written atomically to `path`."""
        text = json_text(self.to_dict(), indent=1, where=path or self.SCHEMA)
        if path is not None:
            write_atomic(path, text)
        return text

    @classmethod
    def from_json(cls: type[F], source: str | Path) -> F:
        """Read a result of this family from a JSON file path (or JSON text starting with `{`).

        Raises:
            InputError: unreadable file, invalid JSON, another schema, or a malformed body.
        """
        return cls.from_data(read_json_object(source), source)

    @classmethod
    def from_data(cls: type[F], data: dict[str, Any], source: str | Path) -> F:
        """A result of this family from the JSON object already read from `source` (named in errors).

        Raises:
            InputError: another schema, or a malformed body.
        """
        schema = data.get("schema")
        if isinstance(schema, str) and schema in cls.RENAMED:
            renamed = cls.RENAMED[schema]
            data = {renamed.get(key, key): value for key, value in data.items()} | {"schema": cls.SCHEMA}
        elif schema != cls.SCHEMA:
            raise InputError(source, f"not a {cls.SCHEMA} result file (schema {schema!r})")
        try:
            return cls.from_dict(data)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            problem = f"missing field {exc}" if isinstance(exc, KeyError) else f"{type(exc).__name__}: {exc}"
            raise InputError(source, f"malformed {cls.SCHEMA} result file ({problem})") from None


def read_json_object(source: str | Path) -> dict[str, Any]:
    """The JSON object in a file (a path, or JSON text starting with `{`).

    Raises:
        InputError: missing or unreadable file, not UTF-8, invalid JSON, or not an object.
    """
    text = str(source)
    if not text.lstrip().startswith("{"):
        try:
            text = Path(source).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise InputError(source, "cannot read result file (no such file)") from None
        except UnicodeDecodeError:
            raise InputError(source, "not a JSON result file (not UTF-8 text)") from None
        except OSError as exc:
            raise InputError(source, f"cannot read result file ({exc.strerror or exc})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(source, f"not a JSON result file ({exc.msg} at line {exc.lineno})") from None
    except RecursionError:
        raise InputError(source, "not a JSON result file (nested too deeply)") from None
    if not isinstance(data, dict):
        raise InputError(source, "not a JSON result file (not a JSON object)")
    return data


def plain(value: Any) -> Any:
    """A JSON-ready copy of a field value: tuples and lists become lists, records and dataclasses dicts."""
    if isinstance(value, Record):
        return value.to_dict()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple | list):
        if value and isinstance(value[0], int | float):  # σ and friends: no per-element recursion
            return list(value)
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def revive(value: Any, hint: Any) -> Any:
    """Inverse of `plain` for a value whose declared type is `hint` (lists back to tuples, dicts to records)."""
    if value is None:
        return None
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        return revive(value, options[0]) if len(options) == 1 else value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise TypeError(f"expected a list, got {type(value).__name__}")
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(revive(v, args[0]) for v in value)
        return tuple(value)
    if origin is dict:
        if not isinstance(value, dict):
            raise TypeError(f"expected an object, got {type(value).__name__}")
        return dict(value)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise TypeError(f"expected an object, got {type(value).__name__}")
        if issubclass(hint, Record):
            return hint.from_dict(value)
        return hint(**value)
    return value


def _hints(cls: type) -> dict[str, Any]:
    """The resolved field types of a dataclass (cached)."""
    if cls not in _HINTS:
        names = {f.name for f in dataclasses.fields(cls)}
        _HINTS[cls] = {k: v for k, v in typing.get_type_hints(cls).items() if k in names}
    return _HINTS[cls]
