"""A `recommend:` run's recommendation in the study directory (`deltarank.study.design.recommend_spec`).

    DIR/recommendations/<run>-<hash of its spec>/adapter_config.json    peft's LoraConfig (what the run trains)
    DIR/recommendations/<run>-<hash of its spec>/recommendation.json    `deltarank recommend`'s result

computed once, before the run trains, by `deltarank.analysis.tools.recommend` of the source run against the model
it trained from, and written by the same writer as `deltarank recommend -o DIR` (so `deltarank plot` reads it).
The directory's name holds the hash of the spec (source, its identity, policy, null): another spec is another
directory, an unchanged one is never computed again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from deltarank.errors import DeltarankError
from deltarank.io.run_directory import RunDirectory
from deltarank.study.design.study import RECOMMENDED_KEYS, RunSpec, Study, run_model, short_hash

log = logging.getLogger(__name__)

RECOMMENDATIONS_DIR = "recommendations"


def recommendation_dir(out_dir: Path, run: RunSpec) -> Path:
    """DIR/recommendations/<run>-<hash of its spec>/ of a `recommend:` run."""
    assert run.recommend is not None
    return out_dir / RECOMMENDATIONS_DIR / f"{run.name}-{short_hash(run.recommend)}"


def recommended_values(out_dir: Path, run: RunSpec) -> dict[str, Any] | None:
    """The TrainConfig keys (RECOMMENDED_KEYS) of the run's recommendation, None until it is computed."""
    from deltarank.train.config_file import load_config_file
    from deltarank.train.lora_patterns import ADAPTER_CONFIG

    path = recommendation_dir(out_dir, run) / ADAPTER_CONFIG
    if not path.is_file():
        return None
    values = load_config_file(path)
    return {key: values.get(key) for key in RECOMMENDED_KEYS}


def ensure_recommendation(
    study: Study, run: RunSpec, out_dir: Path, device: str, echo: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """The run's recommended TrainConfig keys, computing and writing the recommendation first when it is not in
    the study directory yet.

    Raises:
        DeltarankError: the source run has not finished; what `recommend` raises (a bad null file, no ΔW).
    """
    found = recommended_values(out_dir, run)
    if found is not None:
        return found
    from deltarank.analysis.tools.recommend import recommend
    from deltarank.train.lora_patterns import write_recommendation
    from deltarank.train.models import resolve_model

    assert run.recommend is not None
    spec = run.recommend
    source = study.run(str(spec["from"]))
    tuned = out_dir / source.name
    if not RunDirectory(tuned).finished():
        raise DeltarankError(f"run {run.name}: {source.name}, whose ΔW gives its ranks, has not finished")
    folder = recommendation_dir(out_dir, run)
    line = f"run {run.name}: LoRA ranks from the ΔW of {source.name} -> {folder}"
    (echo or log.info)(line)
    result = recommend(
        resolve_model(run_model(source, out_dir)).weights,
        tuned,
        energy=spec.get("energy"),
        budget=spec.get("budget"),
        budget_rank=spec.get("budget_rank"),
        null=spec.get("null"),
        device=device,
    )
    folder.parent.mkdir(parents=True, exist_ok=True)
    write_recommendation(result, folder, overwrite=True)
    values = recommended_values(out_dir, run)
    assert values is not None
    return values


def recommendation_row(out_dir: Path, run: RunSpec) -> dict[str, Any] | None:
    """study.json's `recommendation` of a `recommend:` run: its source, policy, the file (relative to DIR), the
    adapter's default r and α, its trainable parameters and the share of Σ‖ΔW‖² its ranks keep; None for
    another run or one not computed yet."""
    from deltarank.analysis.results.recommendation import RESULT_FILE, RecommendationResult

    if run.recommend is None:
        return None
    path = recommendation_dir(out_dir, run) / RESULT_FILE
    if not path.is_file():
        return None
    result = RecommendationResult.from_json(path)
    return {
        "from": run.recommend["from"],
        "policy": result.policy,
        "energy": result.energy,
        "budget": result.budget,
        "budget_rank": result.budget_rank,
        "null": result.null,
        "file": str(path.relative_to(out_dir)),
        "lora_r": result.lora_r,
        "lora_alpha": result.lora_alpha,
        "modules": len(result.ranks()),
        "trainable_parameters": result.trainable_parameters,
        "retained_energy": result.retained_energy,
    }
