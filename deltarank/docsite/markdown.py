"""Markdown building blocks of the generated pages: tables, anchors, help text and dataclass fields.

Everything here is text in, text out: no file is read or written.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from collections.abc import Iterable, Sequence
from typing import Any

# Google-style docstring sections that end an `Attributes:` section.
SECTION_HEADS = ("Args:", "Arguments:", "Returns:", "Raises:", "Yields:", "Examples:", "Note:", "Notes:")
CODE_SPAN = re.compile(r"(``.*?``|`[^`]*`)")  # an inline code span (split keeps it)
NO_VALUE = "—"  # a table cell with nothing to say (no default, no choices)


def cell(text: object) -> str:
    """`text` fit for one Markdown table cell: one line, pipes and angle brackets escaped."""
    return escape_html(" ".join(str(text).split())).replace("|", "\\|")


def escape_html(line: str) -> str:
    """`<` and `>` outside inline code as entities, so that `energy_<pct>` is text, not an HTML tag."""
    parts = CODE_SPAN.split(line)
    return "".join(
        part if part.startswith("`") else part.replace("<", "&lt;").replace(">", "&gt;") for part in parts
    )


def code(text: object) -> str:
    """`text` as inline code (a backtick inside is kept by a longer fence)."""
    value = str(text)
    fence = "``" if "`" in value else "`"
    pad = " " if value.startswith("`") or value.endswith("`") else ""
    return f"{fence}{pad}{value}{pad}{fence}"


def table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A Markdown table (every cell made one line)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def anchor(text: str) -> str:
    """The id MkDocs' toc extension gives a heading `text` (lower case, word characters and hyphens)."""
    slug = re.sub(r"[^\w\s-]", "", text.lower()).strip()
    return re.sub(r"[-\s]+", "-", slug)


def prose(text: str | None) -> str:
    """A docstring or click help as Markdown paragraphs: indentation removed; click's `\\b` (no-rewrap)
    paragraphs become preformatted blocks."""
    if not text:
        return ""
    paragraphs = inspect.cleandoc(text).split("\n\n")
    out = []
    for paragraph in paragraphs:
        if paragraph.startswith("\b"):
            block = paragraph.lstrip("\b").strip("\n")
            out.append("```text\n" + block + "\n```")
        else:
            out.append(paragraph.strip("\n"))
    return _escape_text_lines("\n\n".join(out))


def _escape_text_lines(text: str) -> str:
    """`escape_html` on every line that is not code (fenced, or indented by four spaces)."""
    lines, fenced = [], False
    for line in text.split("\n"):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        code_line = fenced or line.startswith("    ") or line.lstrip().startswith("```")
        lines.append(line if code_line else escape_html(line))
    return "\n".join(lines)


def summary(obj: Any) -> str:
    """The first paragraph of an object's docstring, on one line ('' without one)."""
    doc = inspect.getdoc(obj) or ""
    return " ".join(doc.split("\n\n")[0].split())


def attribute_docs(cls: type) -> dict[str, str]:
    """The `Attributes:` section of a class's Google-style docstring: name -> its text on one line."""
    doc = inspect.getdoc(cls) or ""
    found: dict[str, str] = {}
    inside, name = False, ""
    for line in doc.splitlines():
        stripped = line.strip()
        if stripped == "Attributes:":
            inside = True
            continue
        if not inside:
            continue
        if stripped in SECTION_HEADS or (stripped and not line.startswith(" ")):
            break
        match = re.match(r"^ {4}(\w+)(?: \(.*?\))?:\s*(.*)$", line)
        if match:
            name = match.group(1)
            found[name] = match.group(2)
        elif name and stripped:
            found[name] += " " + stripped
    return found


def field_help(cls: type, item: dataclasses.Field[Any]) -> str:
    """A dataclass field's help: its metadata "help", else its entry in the class's `Attributes:`."""
    help_text = item.metadata.get("help")
    if help_text:
        return str(help_text)
    return attribute_docs(cls).get(item.name, "")


def field_type(item: dataclasses.Field[Any]) -> str:
    """A field's annotation as written in the code."""
    kind = item.type
    return kind if isinstance(kind, str) else getattr(kind, "__name__", str(kind))


def field_default(item: dataclasses.Field[Any]) -> str:
    """A field's default as YAML/JSON readers would write it ('required' without one)."""
    if item.default is not dataclasses.MISSING:
        return value_text(item.default)
    if item.default_factory is not dataclasses.MISSING:
        return value_text(item.default_factory())
    return "required"


def value_text(value: Any) -> str:
    """A Python value as a study or config file writes it (None: null, booleans lower case)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple | list):
        return "[" + ", ".join(value_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {value_text(v)}" for k, v in value.items()) + "}"
    return str(value)
