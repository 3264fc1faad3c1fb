"""Width-aware rank statistics of a spectrum result, per module type, with their spread over layers.

An energy rank alone does not say how much of a matrix a delta uses: on SmolLM2-135M's 576-wide projections a
Gaussian ΔW has r₀.₉ = 410, and k_proj/v_proj (192 wide) cannot exceed 8.8× a LoRA rank of 16 even when random,
while Biderman et al.'s 10–100× of r = 16 was measured on 4096-wide matrices (3.9–39% of the width). So every
energy rank r_τ (τ from the run's thresholds: 0.5, 0.8, 0.9, 0.95, 0.99 by default) is reported with

- its median and interquartile range over the layers of the module type,
- r_τ ÷ r (a LoRA rank, when given), r_τ ÷ min(m, n) (the width) and r_τ ÷ the Gaussian r_τ of the same shape
  (`MatrixSpectrum.random_ranks`: what pure noise of that shape would need),

and the stable rank and participation ratio beside them, then the sparsity profile's shares (`unchanged`,
`within_atol`, `within_rounding`, `rank_fraction`: `results.sparsity`). `spread` values are `{"median", "q1",
"q3", "layers"}`; a ratio whose denominator is unknown (a file written before the Gaussian ranks were recorded)
and a share no record holds (a file written before the profile was recorded) are left out.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from deltarank.analysis.results.medians import quartiles
from deltarank.analysis.results.sparsity import MEASURES as SPARSITY_MEASURES
from deltarank.analysis.results.spectrum import MatrixSpectrum, SpectrumResult

SHAPE_MEASURES = ("stable", "participation")


def spread(values: Iterable[float | None]) -> dict[str, float] | None:
    """`{"median", "q1", "q3", "layers"}` of the values that are not None (None when there are none)."""
    present = [float(v) for v in values if v is not None]
    found = quartiles(present)
    if found is None:
        return None
    q1, mid, q3 = found
    return {"median": mid, "q1": q1, "q3": q3, "layers": len(present)}


def energy_keys(matrices: Iterable[MatrixSpectrum]) -> list[str]:
    """The energy-rank keys the records hold (`energy_50`, ..., `energy_99`), by threshold."""
    keys = {k for m in matrices for k in m.ranks if k.startswith("energy_")}
    return sorted(keys, key=lambda k: float(k.removeprefix("energy_")))


def module_rank_statistics(result: SpectrumResult, lora_r: float | None = None) -> dict[str, dict[str, Any]]:
    """Per module type: `width` (min(m, n)), `layers`, and for every energy rank key its spread and those of
    `<key>_over_width`, `<key>_over_gaussian` and (with `lora_r`) `<key>_over_r`; then `stable` and
    `participation`; then the sparsity shares the records hold (`unchanged`, `within_atol`, `within_rounding`,
    `rank_fraction`)."""
    table: dict[str, dict[str, Any]] = {}
    for module, items in result.by_module().items():
        row: dict[str, Any] = {"width": min(items[0].shape), "layers": len(items)}
        for key in energy_keys(items):
            values = [(m, m.ranks.get(key)) for m in items]
            row[key] = spread(v for _, v in values)
            if lora_r:
                row[f"{key}_over_r"] = spread(None if v is None else v / lora_r for _, v in values)
            row[f"{key}_over_width"] = spread(None if v is None else v / min(m.shape) for m, v in values)
            over_gaussian = spread(
                None if v is None or not (g := m.gaussian_rank(key)) else v / g for m, v in values
            )
            if over_gaussian is not None:
                row[f"{key}_over_gaussian"] = over_gaussian
        for key in SHAPE_MEASURES:
            row[key] = spread(m.ranks.get(key) for m in items)
        for key in SPARSITY_MEASURES:
            shares = spread(getattr(m.sparsity, key, None) for m in items)
            if shares is not None:
                row[key] = shares
        table[module] = row
    return table
