"""render_figures: which figures `--kind all` draws from which inputs, and the files it writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from deltarank.errors import DeltarankError
from deltarank.figures.render import parse_kinds, render_figures
from tests.figures.synthetic import (
    extract_result,
    full_result,
    intruder_result,
    lora_result,
    planted_result,
    similarity_result,
    write_summary,
)


def _names(paths: list[Path]) -> list[str]:
    return [p.name for p in paths]


def test_parse_kinds() -> None:
    assert parse_kinds(("ranks,ratio", "ranks")) == ["ranks", "ratio"]
    assert parse_kinds(()) == ["all"]
    with pytest.raises(DeltarankError, match="unknown figure kind 'pie'"):
        parse_kinds("pie")


def test_all_draws_what_the_inputs_allow(tmp_path: Path) -> None:
    summary = write_summary(tmp_path / "summary.json")
    written = render_figures([full_result(), lora_result()], tmp_path / "out", summary=summary, formats="png")
    assert _names(written) == [
        "spectra.png", "ranks_by_layer.png", "headline.png", "learning_forgetting.png",
    ]  # fmt: skip
    assert all(p.stat().st_size > 0 for p in written)


def test_all_with_checkpoints_adds_the_training_figure(tmp_path: Path) -> None:
    results = [planted_result(f"r/full/checkpoint-{s}", {"q_proj": s}) for s in (10, 20)]
    written = render_figures(results, tmp_path, formats="svg")
    assert _names(written) == ["spectra.svg", "ranks_by_layer.svg", "rank_over_training.svg"]  # no LoRA rank


def test_explicit_kind_that_the_inputs_cannot_make(tmp_path: Path) -> None:
    with pytest.raises(DeltarankError, match="figure 'ratio' needs a LoRA rank"):
        render_figures([full_result()], tmp_path, kinds="ratio")
    with pytest.raises(DeltarankError, match="figure 'learning' needs --summary"):
        render_figures([full_result()], tmp_path, kinds="learning")
    with pytest.raises(DeltarankError, match="figure 'steps' needs two or more"):
        render_figures([full_result()], tmp_path, kinds="steps")
    with pytest.raises(DeltarankError, match="nothing to plot"):
        render_figures([], tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_summary_only(tmp_path: Path) -> None:
    summary = write_summary(tmp_path / "summary.json")
    written = render_figures([], tmp_path / "out", summary=summary, formats="pdf,png")
    assert _names(written) == ["learning_forgetting.pdf", "learning_forgetting.png"]


def test_output_is_deterministic(tmp_path: Path) -> None:
    small = full_result(layers=2, shapes={"q_proj": (16, 16)})  # bands, hatches, log axes, ratio labels
    first, second = (
        render_figures([small], tmp_path / d, kinds="spectrum,ratio", formats="pdf,svg", lora_rank=4)
        for d in "ab"
    )
    assert len(first) == 4
    for a, b in zip(first, second, strict=True):
        assert a.read_bytes() == b.read_bytes(), a.name


def test_each_file_goes_to_its_family_with_its_label() -> None:
    from deltarank.figures.render import sort_inputs

    results = [full_result(), intruder_result("full", 0.2), similarity_result(), intruder_result("lora", 0.2)]
    inputs = sort_inputs([*results, extract_result()], ["full", "full", "A vs B", "lora", "x"])
    assert [run.label for run in inputs.runs] == ["full"]
    assert [label for label, _ in inputs.intruders] == ["full", "lora"]  # names are unique per family only
    assert [label for label, _ in inputs.similarity] == ["A vs B"]
    derived = sort_inputs([*results, extract_result(), extract_result()])
    assert [label for label, _ in derived.intruders] == ["full", "lora"]
    assert [label for label, _ in derived.similarity] == ["lora vs full"]
    assert [label for label, _ in derived.extracts] == ["full", "full #2"]
    with pytest.raises(DeltarankError, match="got 1 --label values for 4 result files"):
        sort_inputs(results, ["a"])
