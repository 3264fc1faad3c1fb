"""A study run's functional rank (`evaluate: {functional_rank: true}`): the share of its learning and of its
drift that the top k directions of every ΔW carry, k = 0, 1, 2, 4, … up to the largest rank of any ΔW
(`deltarank.evaluation.functional_rank`).

The measures are the study's own: learning is the held-out loss on the run's held-out sequences
(`deltarank.evaluation.loss`), drift the loss on the base model's samples of the forgetting set, whose rise is
the forgetting measure (`deltarank.evaluation.drift`). Every method with a ΔW is measured (full fine-tuning
and the PEFT methods, each ΔW formed exactly from its factors in float32); a run trained on a quantized base
(QLoRA) gets a note instead, and a run without ΔW (prompt-based and bottleneck adapters) no section.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from deltarank.evaluation.functional_rank import LEARNING, Measure, Measured
from deltarank.study.design.evaluate_spec import EvaluateSpec

DRIFT = "drift"
QUANTIZED_NOTE = "not measured: the run trained on a quantized base (QLoRA), which its cut models would need"
NO_HELD_OUT_NOTE = "no held-out set: name one in evaluate.held_out"


def study_measure(
    tokenizer: Any,
    examples: Sequence[tuple[list[int], list[int]]],
    general: Sequence[dict[str, Any]] | None,
) -> Measure:
    """model -> its learning (held-out loss on `examples`) and, with a forgetting set `general`, its drift.

    Args:
        tokenizer: The base model's tokenizer.
        examples: The held-out (input_ids, labels) sequences (`deltarank.evaluation.loss.held_out_examples`).
        general: The forgetting set's records (`deltarank.evaluation.drift`), or None: no drift.
    """
    from deltarank.evaluation.drift import drift_loss
    from deltarank.evaluation.loss import sequence_losses

    def measure(model: Any) -> Measured:
        held_out = sequence_losses(model, examples, tokenizer.pad_token_id)
        found = {
            LEARNING: {"value": held_out["loss"], "sums": held_out["sums"], "counts": held_out["counts"]}
        }
        if general is not None:
            drift = drift_loss(model, tokenizer, general)
            found[DRIFT] = {"value": drift["general_loss"], **(drift.get("per_sequence") or {})}
        return found

    return measure


def study_measured(measurement: Mapping[str, Any]) -> Measured | None:
    """What `study_measure` measures, read from a study measurement of the same model (`run_measures`: the
    held-out loss and the forgetting set's loss, with each sequence's part), or None when it lacks a part."""
    parts = measurement.get("per_sequence") or {}
    learning = (measurement.get("learning") or {}).get("held_out_loss")
    drift = (measurement.get("forgetting") or {}).get("general_loss")
    if learning is None or "held_out" not in parts or (drift is not None and "general" not in parts):
        return None
    found: dict[str, Mapping[str, Any]] = {LEARNING: {"value": learning, **parts["held_out"]}}
    if drift is not None:
        found[DRIFT] = {"value": drift, **parts["general"]}
    return found


def measure_functional_rank(
    loader: Any,
    run_dir: Path,
    tokenizer: Any,
    spec: EvaluateSpec,
    data: str,
    general: Sequence[dict[str, Any]] | None,
    measured: tuple[Mapping[str, Any], Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The `functional_rank` section of a study run's row (a run with a ΔW).

    Args:
        loader: The `deltarank.evaluation.models.EvalModels` of the model the run trained from.
        run_dir: The run's `train` output directory.
        tokenizer: The base model's tokenizer.
        spec: The study's `evaluate:` (the held-out set and its size).
        data: The run's training data spec (picks the default held-out set).
        general: The forgetting set's records, or None: no drift.
        measured: The study's measurements of the base model and of the run (`run_measures`), whose held-out
            and forgetting losses are reused (`study_measured`); None: measured again.

    Returns:
        `deltarank.evaluation.functional_rank.functional_rank`'s section, or `{"note": ...}` for a run trained
        on a quantized base or without a held-out set.
    """
    from deltarank.evaluation.functional_rank import run_functional_rank
    from deltarank.evaluation.loss import held_out_examples
    from deltarank.io.quantization import read_quantization

    if read_quantization(run_dir) is not None:
        return {"note": QUANTIZED_NOTE}
    held_out = spec.held_out_for(data)
    if held_out is None:
        return {"note": NO_HELD_OUT_NOTE}
    examples, _ = held_out_examples(tokenizer, held_out, spec.seq_len, spec.held_out_sequences)
    base, tuned = (None, None) if measured is None else (study_measured(m) for m in measured)
    if general is None:  # the study's forgetting is not part of this measure
        base, tuned = (None if m is None else {LEARNING: m[LEARNING]} for m in (base, tuned))
    return run_functional_rank(loader, run_dir, study_measure(tokenizer, examples, general), base, tuned)
