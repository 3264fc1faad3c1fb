"""Merge geometry of a study's runs (`evaluate: {merge: true}`): what `deltarank similarity BASE T1 … Tn --merge`
measures, at its defaults (`deltarank.analysis.tools.merge.MergeSettings`), for the runs with a ΔW against one
base (made after the runs, cached with the other subspace files: `deltarank.study.measure.subspace`).

    DIR/merge.json           the runs that train from the first such run's base, in the study's order
                             (`deltarank.similarity/1` with its `merge` section: `deltarank plot --kind merge`)
    DIR/merge-<base>.json    each further base with two or more runs (stacked runs train from their parent)

study.json's `subspace.merge` = {"groups": [{"runs": [names, in the file's order], "base", "file", "figure"
(the heatmaps' stem in DIR/figures/), "k", "density", "dare_drops", "seed", "modules": {module type: {
"matrices", "k" (median subspace size), "overlap" (mean over pairs of the median φ(k, k)), "sign_conflict" (mean
over pairs of the median TIES sign-conflict rate), "sign_conflict_nway", "dare_error" (per drop rate, the mean
over runs of the median DARE relative error) and "dare_merged_error" (per drop rate, of the merged sum)}}}],
"skipped": [{"runs", "reason"}] (a base with one run), and "note" when fewer than two runs have a ΔW}.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from deltarank.analysis.results.merge import ModuleMerge
    from deltarank.analysis.results.similarity import SimilarityResult

MERGE_FILE = "merge.json"
FIGURE_STEM = "merge_geometry"
TOO_FEW = "fewer than 2 runs with a ΔW: no merge geometry"
ALONE = "the only run with a ΔW that trains from {base}: nothing to merge it with"


@dataclass(frozen=True)
class MergeGroup:
    """The runs with a ΔW against one base, and their merge file (relative to the study directory)."""

    base: str
    runs: tuple[str, ...]
    file: str

    @property
    def figure(self) -> str:
        """The stem of the group's heatmaps in the study's figures directory."""
        return FIGURE_STEM + Path(self.file).stem.removeprefix("merge")


def merge_groups(
    runs: Sequence[str], base_of: Callable[[str], str]
) -> tuple[list[MergeGroup], list[dict[str, Any]]]:
    """The runs with a ΔW grouped by the weights they train from (first-seen order), and those left out.

    Args:
        runs: The runs with a ΔW, in the study's order.
        base_of: The weights a run's ΔW is taken against.

    Returns:
        The groups of two or more runs (the first base's file is merge.json) and the skipped ones ({"runs",
        "reason"}).
    """
    by_base: dict[str, list[str]] = {}
    for run in runs:
        by_base.setdefault(base_of(run), []).append(run)
    groups, skipped, labels = [], [], set()
    for index, (base, names) in enumerate(by_base.items()):
        if len(names) < 2:
            skipped.append({"runs": names, "reason": ALONE.format(base=base)})
            continue
        label = re.sub(r"[^A-Za-z0-9.+_-]+", "_", Path(base).name).strip("_.") or f"base{index}"
        if label in labels:
            label = f"{label}-{index}"
        labels.add(label)
        file = MERGE_FILE if index == 0 else f"merge-{label}.json"
        groups.append(MergeGroup(base, tuple(names), file))
    return groups, skipped


def merge_section(
    groups: Sequence[MergeGroup], skipped: Sequence[dict[str, Any]], out_dir: Path, runs_with_delta: int
) -> dict[str, Any]:
    """study.json's `subspace.merge` (module docstring) from the groups' merge files."""
    from deltarank.analysis.results.similarity import SimilarityResult

    section: dict[str, Any] = {"groups": [], "skipped": list(skipped)}
    if runs_with_delta < 2:
        section["note"] = TOO_FEW
    for group in groups:
        merge = SimilarityResult.from_json(out_dir / group.file).merge
        if merge is None:
            continue
        section["groups"].append(
            {
                "runs": list(group.runs),
                "base": group.base,
                "file": group.file,
                "figure": group.figure,
                "k": merge.k,
                "density": merge.density,
                "dare_drops": list(merge.dare_drops),
                "seed": merge.seed,
                "modules": {m.module: module_summary(m, merge.dare_drops) for m in merge.modules},
            }
        )
    return section


def module_summary(module: ModuleMerge, drops: Sequence[float]) -> dict[str, Any]:
    """One module type's entry: its medians over layers, averaged over the pairs (overlap, sign conflict) or
    the runs (DARE error), as `deltarank similarity --merge` prints them."""
    from deltarank.analysis.tools.similarity import pairwise_mean, present_mean

    return {
        "matrices": module.matrices,
        "k": module.k,
        "overlap": pairwise_mean(module.overlap),
        "sign_conflict": pairwise_mean(module.sign_conflict),
        "sign_conflict_nway": module.sign_conflict_nway,
        "dare_error": {f"{p:g}": present_mean(row) for p, row in zip(drops, module.dare_error, strict=True)},
        "dare_merged_error": {
            f"{p:g}": value for p, value in zip(drops, module.dare_merged_error, strict=True)
        },
    }


def measure_merge(base: str, runs: Sequence[Path], device: str) -> SimilarityResult:
    """The similarity result with merge geometry of `runs` against `base` (`deltarank similarity BASE T1 … Tn
    --merge`, its defaults)."""
    from deltarank.analysis.tools.merge import MergeSettings
    from deltarank.analysis.tools.similarity import similarity

    first, second, *more = runs
    return similarity(base, first, second, *more, merge=MergeSettings(), device=device)
