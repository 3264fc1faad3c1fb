"""Write a figure to PDF/PNG/SVG deterministically: the same figure gives the same bytes every time."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib import rc_context
from matplotlib.figure import Figure

from deltarank.errors import DeltarankError, OptionError, OutputError
from deltarank.figures.style import STYLE
from deltarank.io.atomic import replace_atomic

FORMATS: tuple[str, ...] = ("pdf", "png", "svg")
PNG_DPI = 300

# Timestamps and tool versions make files differ between runs; drop them.
_METADATA: dict[str, dict[str, Any]] = {
    "pdf": {"CreationDate": None, "ModDate": None, "Producer": None, "Creator": "deltarank"},
    "svg": {"Date": None, "Creator": "deltarank"},
    "png": {"Software": "deltarank"},
}


def parse_formats(text: str | Sequence[str]) -> tuple[str, ...]:
    """Formats from `"pdf,png"` or a list, lower-cased, de-duplicated, in the order given.

    Raises:
        DeltarankError: a format other than pdf, png or svg.
    """
    items = text.split(",") if isinstance(text, str) else list(text)
    formats: list[str] = []
    for item in items:
        fmt = item.strip().lower().lstrip(".")
        if not fmt:
            continue
        if fmt not in FORMATS:
            raise OptionError(f"unknown figure format {fmt!r}; choose from {', '.join(FORMATS)}")
        if fmt not in formats:
            formats.append(fmt)
    if not formats:
        raise DeltarankError(f"no figure format given; choose from {', '.join(FORMATS)}")
    return tuple(formats)


def save_figure(
    fig: Figure, directory: str | Path, stem: str, formats: str | Sequence[str] = ("pdf", "png")
) -> list[Path]:
    """Save `fig` as `directory/stem.<fmt>` for each format, atomically and byte-for-byte reproducibly.

    The directory is created when missing. Each file is written to a temporary name and renamed, so a
    reader never sees a partial figure.

    Args:
        fig: The figure to save.
        directory: Output directory (created with its parents when missing).
        stem: File name without extension, e.g. `"headline"`.
        formats: `"pdf,png"` or a sequence of formats among pdf, png, svg.

    Returns:
        The written paths, in the order of `formats`.

    Raises:
        OutputError: the directory cannot be created or written.
    """
    out_dir = Path(directory)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{out_dir}: cannot create output directory ({exc.strerror or exc})") from None
    if not os.access(out_dir, os.W_OK):
        raise OutputError(f"{out_dir}: output directory is not writable")
    written = []
    for fmt in parse_formats(formats):
        target = out_dir / f"{stem}.{fmt}"
        _save_one(fig, target, fmt)
        written.append(target)
    return written


def _save_one(fig: Figure, target: Path, fmt: str) -> None:
    """Render one format to a temp file beside `target`, then rename over it."""

    def render(tmp: Path) -> None:
        with rc_context(STYLE):
            fig.savefig(tmp, format=fmt, dpi=PNG_DPI, metadata=_METADATA[fmt])

    replace_atomic(target, render)
