"""Placement of a study run's ΔW (`evaluate: {placement: true}`): where it lands among its base's singular
directions (`deltarank.analysis.tools.placement`, what `deltarank placement RUN` measures).

    DIR/<run>/placement.json   the run's placement result (`deltarank.placement/1`)

The row of the run in study.json gets, per module type, the medians over layers that placement.json keeps for
k = ΔW's r₀.₉ (`placement.<module>.<measure>_median`: k, left_top, left_bottom, left_chance, left_mean_cos2 and
the right_ ones).
"""

from __future__ import annotations

from pathlib import Path

from deltarank.analysis.results.placement import MATCHED_KEY, MEASURES, RESULT_FILE, SIDES, PlacementResult

# The measures of placement.json's per-module medians that a study row keeps, in the order tables show them.
ROW_MEASURES = ("k", *(f"{side}_{measure}" for side in SIDES for measure in MEASURES))


def placement_file(run: str) -> str:
    """The path of a run's placement.json, relative to the study directory."""
    return f"{run}/{RESULT_FILE}"


def measure_placement(base_weights: Path, run_dir: Path, device: str = "auto") -> PlacementResult:
    """The placement of the run's ΔW (run_dir against `base_weights`), written to run_dir/placement.json.

    Args:
        base_weights: The weights the run trained from.
        run_dir: The run's `train` output directory.
        device: Where the decompositions run (`auto`, `cpu`, `cuda`, ...).

    Returns:
        The placement result that was written.
    """
    from deltarank.analysis.tools.placement import placement

    result = placement(base_weights, run_dir, device=device)
    result.to_json(run_dir / RESULT_FILE)
    return result


def placement_medians(result: PlacementResult) -> dict[str, dict[str, float | None]]:
    """Per module type, the medians over layers of every `ROW_MEASURES` at k = ΔW's r₀.₉, read from the
    result's per-module summary (`<measure>_median`; None where no matrix of the type has it, e.g. ΔW = 0)."""
    found: dict[str, dict[str, float | None]] = {}
    for module in result.modules:
        row = module.subspaces.get(MATCHED_KEY, {})
        found[module.module] = {f"{m}_median": _median(row.get(m)) for m in ROW_MEASURES}
    return found


def _median(spread: dict[str, float] | None) -> float | None:
    """The median of a {median, q1, q3, layers} entry, None when absent."""
    return None if spread is None else spread["median"]
