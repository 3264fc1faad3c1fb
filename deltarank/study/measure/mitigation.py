"""Intruder mitigation of a study run (`evaluate: {mitigate: λ}`): the run's weights with each intruder
direction's singular value scaled by λ (`deltarank.analysis.tools.mitigate`, what `deltarank intruders BASE RUN
--mitigate λ -o RUN/mitigated` writes), evaluated as the run itself is.

    DIR/<run>/mitigated/   the mitigated model: a checkpoint for a full fine-tune, a LoRA adapter for a LoRA run
                           (the run's config files copied, as the command copies them; the run's own measurement
                           files, which describe the unmitigated model, are not)

The row of the run in study.json gets `mitigated`: {"lambda", "intruders" (directions scaled, at the tool's
default k and ε: "top_k", "epsilon"), "dir", and the row's own evaluation of the mitigated model: "learning",
"forgetting" (each change against the base, with its interval where the row has one), "diversity"}. A run the
study does not mitigate (an adapter other than plain LoRA: DoRA, QLoRA, IA3, ..., which the tool writes as a merged
checkpoint that the run's evaluation would not load as the run) gets {"lambda", "note"} instead.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from deltarank.errors import DeltarankError

logger = logging.getLogger(__name__)

MITIGATED_DIR = "mitigated"


def mitigated_dir(run: str) -> str:
    """The mitigated model of a run, relative to the study directory."""
    return f"{run}/{MITIGATED_DIR}"


def measure_mitigated(
    loader: Any,
    base_weights: Path,
    run_dir: Path,
    lam: float,
    device: str,
    evaluate: Callable[[Any, Path], dict[str, Any]],
) -> dict[str, Any]:
    """The row's `mitigated` block: run_dir mitigated at λ into run_dir/mitigated and evaluated there.

    Args:
        loader: The run's `deltarank.evaluation.models.EvalModels` (its base is reused for a LoRA adapter).
        base_weights: The weights the run trained from.
        run_dir: The run's `train` output directory.
        lam: λ, the factor on each intruder direction's singular value.
        device: Where the decompositions and the evaluation run.
        evaluate: evaluate(model, out_dir): the run's own evaluation of a loaded model (writing what it writes
            into out_dir).
    """
    from deltarank.analysis.results.placement import RESULT_FILE as PLACEMENT
    from deltarank.analysis.tools.mitigate import mitigate
    from deltarank.evaluation.diversity import GENERATIONS_FILE
    from deltarank.io.run_directory import MEASUREMENT

    out = run_dir / MITIGATED_DIR
    try:
        found = mitigate(
            base_weights, run_dir, out, lam=lam, overwrite=True, device=device, merge_adapters=False
        )
    except DeltarankError as error:  # refused before anything is written: adapters other than plain LoRA
        logger.warning("%s: not mitigated: %s", run_dir.name, error)
        return {"lambda": lam, "note": f"not mitigated: {error}"}
    for name in (MEASUREMENT, GENERATIONS_FILE, PLACEMENT):  # the run's measurements, copied with its config
        (out / name).unlink(missing_ok=True)
    measured = loader.evaluate(out, lambda model: evaluate(model, out))
    return {
        "lambda": lam,
        "intruders": found.total(),
        "top_k": found.top_k,
        "epsilon": found.epsilon,
        "dir": mitigated_dir(run_dir.name),
        **measured,
    }
