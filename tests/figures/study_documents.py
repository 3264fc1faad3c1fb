"""Synthetic study.json documents whose rows carry what the study's measure step writes for the intervals:
each sequence's losses (`per_sequence`) and, from them, the paired-bootstrap intervals of the held-out loss
change and the general-text loss rise (the runner's own `_add_changes`), and accuracies with their example
counts. Nine series by default: the legend of a nine-run study is what the compact legend is tested on."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from deltarank.study.measure.run_measures import _add_changes
from tests.study.example_study import document, run

SEQUENCES = 24
ACCURACY_EXAMPLES = 200
BASE_ACCURACY = 0.5
# (method, LoRA rank, weight decay, attention dropout, learning: loss drop, forgetting: general-loss rise)
SERIES: tuple[tuple[str, int | None, float, float, float, float], ...] = (
    ("full", None, 0.0, 0.0, 0.60, 0.30),
    ("lora", 1, 0.0, 0.0, 0.25, 0.05),
    ("lora", 2, 0.0, 0.0, 0.30, 0.07),
    ("lora", 4, 0.0, 0.0, 0.35, 0.09),
    ("lora", 8, 0.0, 0.0, 0.40, 0.12),
    ("lora", 16, 0.0, 0.0, 0.45, 0.15),
    ("lora", 64, 0.0, 0.0, 0.50, 0.20),
    ("full", None, 1e-4, 0.0, 0.58, 0.27),
    ("full", None, 0.0, 0.1, 0.55, 0.25),
)


def _sequences(rng: np.random.Generator, mean: float, spread: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-sequence mean losses about `mean` and token counts (8–40)."""
    return rng.normal(mean, spread, SEQUENCES), rng.integers(8, 41, SEQUENCES).astype(float)


def _record(losses: np.ndarray, counts: np.ndarray) -> dict[str, list[float]]:
    return {"sums": [float(v) for v in losses * counts], "counts": [float(c) for c in counts]}


def _mean(record: dict[str, list[float]]) -> float:
    return sum(record["sums"]) / sum(record["counts"])


def study_with_intervals(
    series: Sequence[tuple[str, int | None, float, float, float, float]] = SERIES,
    sizes: Sequence[int] = (200,),
    seeds: Sequence[int] = (0,),
    accuracy: bool = False,
    noise: float = 0.05,
) -> dict[str, Any]:
    """A study of one base: every series × data size × seed, its rows as the runner writes them (losses,
    their changes with the paired intervals, accuracies out of 200 examples when `accuracy`)."""
    rng = np.random.default_rng(0)
    held, held_counts = _sequences(rng, 2.0, 0.4)
    general, general_counts = _sequences(rng, 1.0, 0.3)
    base: dict[str, Any] = {
        "learning": {"held_out_loss": 0.0},
        "forgetting": {"general_loss": 0.0},
        "per_sequence": {"held_out": _record(held, held_counts), "general": _record(general, general_counts)},
    }
    base["learning"]["held_out_loss"] = _mean(base["per_sequence"]["held_out"])
    base["forgetting"]["general_loss"] = _mean(base["per_sequence"]["general"])
    if accuracy:
        base["learning"].update(accuracy=BASE_ACCURACY, accuracy_examples=ACCURACY_EXAMPLES)
    runs = []
    for method, r, decay, dropout, drop, rise in series:
        for j, size in enumerate(sizes):
            for seed in seeds:
                gain = drop * (1 + 0.15 * j)  # more data: more learning
                ps = {
                    "held_out": _record(held - gain + rng.normal(0, noise, SEQUENCES), held_counts),
                    "general": _record(general + rise + rng.normal(0, noise, SEQUENCES), general_counts),
                }
                found: dict[str, Any] = {
                    "learning": {"held_out_loss": _mean(ps["held_out"])},
                    "forgetting": {"general_loss": _mean(ps["general"])},
                    "per_sequence": ps,
                }
                if accuracy:
                    correct = round(ACCURACY_EXAMPLES * min(0.95, 0.5 + gain * 0.6 + rng.normal(0, 0.01)))
                    found["learning"].update(
                        accuracy=correct / ACCURACY_EXAMPLES,
                        accuracy_examples=ACCURACY_EXAMPLES,
                        accuracy_set="builtin:zh-sentiment:test",
                    )
                _add_changes(found, base)
                name = f"{method}{'' if r is None else r}{'-wd' if decay else ''}{'-do' if dropout else ''}"
                row = run(
                    f"{name}-n{size}-s{seed}",
                    method,
                    seed=seed,
                    size=size,
                    lora_r=r,
                    weight_decay=decay,
                    trainable=100_000 if method == "full" else 1000 * (r or 1),
                    device_seconds=(40.0 if method == "full" else 10.0 + (r or 1) / 8) * size / 200,
                )
                if r is not None:  # a study's coordinates name every axis it varies
                    row["coordinates"]["lora_r"] = r
                if dropout:
                    row["coordinates"]["attention_dropout"] = dropout
                    row["settings"]["attention_dropout"] = dropout
                row.update(learning=found["learning"], forgetting=found["forgetting"], per_sequence=ps)
                runs.append(row)
    return document("interval-test", runs, base)
