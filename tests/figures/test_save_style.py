"""The save helper (deterministic bytes, formats, directories) and the shared style helpers."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from matplotlib.figure import Figure

from deltarank.errors import DeltarankError
from deltarank.figures.save import parse_formats, save_figure
from deltarank.figures.style import PALETTE, format_ratio, new_figure, paper_style, short_module


def _figure() -> Figure:
    with paper_style():
        fig = new_figure(3.3, 2.0)
        ax = fig.add_subplot()
        ax.plot([1, 2, 3], [1, 4, 9], label="a")
        ax.set_xlabel("x")
        ax.legend()
    return fig


@pytest.mark.parametrize(
    ("value", "text"), [(224 / 16, "14×"), (3.5, "3.5×"), (100.0, "100×"), (9.96, "10×")]
)
def test_format_ratio(value: float, text: str) -> None:
    assert format_ratio(value) == text


def test_short_module_and_palette() -> None:
    assert short_module("gate_proj") == "gate"
    assert short_module("lm_head") == "lm_head"
    assert len(set(PALETTE)) == len(PALETTE) == 8


def test_parse_formats() -> None:
    assert parse_formats("pdf, PNG,.svg,pdf") == ("pdf", "png", "svg")
    assert parse_formats(["png"]) == ("png",)
    with pytest.raises(DeltarankError, match="unknown figure format 'jpg'"):
        parse_formats("png,jpg")
    with pytest.raises(DeltarankError, match="no figure format"):
        parse_formats(" , ")


def test_save_writes_each_format_and_creates_the_directory(tmp_path: Path) -> None:
    out = tmp_path / "deep" / "figs"
    written = save_figure(_figure(), out, "demo", "pdf,png,svg")
    assert written == [out / "demo.pdf", out / "demo.png", out / "demo.svg"]
    assert all(p.stat().st_size > 1000 for p in written)
    assert (out / "demo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pdf = (out / "demo.pdf").read_bytes()
    assert pdf[:5] == b"%PDF-"
    assert b"FontFile2" in pdf and b"/Subtype /Image" not in pdf  # TrueType text, vector art
    assert sorted(p.name for p in out.iterdir()) == ["demo.pdf", "demo.png", "demo.svg"]  # no temp files left
    mask = os.umask(0o022)
    os.umask(mask)
    assert stat.S_IMODE((out / "demo.png").stat().st_mode) == 0o666 & ~mask


def test_save_is_byte_for_byte_deterministic(tmp_path: Path) -> None:
    first = save_figure(_figure(), tmp_path / "a", "demo", "pdf,png,svg")
    second = save_figure(_figure(), tmp_path / "b", "demo", "pdf,png,svg")
    for a, b in zip(first, second, strict=True):
        assert a.read_bytes() == b.read_bytes(), a.name
    svg = first[2].read_text()
    assert "<dc:date>" not in svg
    assert b"CreationDate" not in first[0].read_bytes()


def test_png_is_300_dpi_at_the_figure_size(tmp_path: Path) -> None:
    from matplotlib.image import imread

    (png,) = save_figure(_figure(), tmp_path, "demo", "png")
    assert imread(png).shape[:2] == (600, 990)  # 2.0 × 3.3 in at 300 dpi


def test_save_into_a_file_path_fails_cleanly(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    from deltarank.errors import OutputError

    with pytest.raises(OutputError, match="cannot create output directory"):
        save_figure(_figure(), blocker / "sub", "demo", "png")
