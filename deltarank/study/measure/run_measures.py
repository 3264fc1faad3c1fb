"""What a study measures on the base model and on every finished run: learning, forgetting, diversity, cost
and the ranks of ΔW (what to measure: the study file's `evaluate:`, `deltarank.study.design.evaluate_spec`).

- learning: mean loss per trained token on the held-out set (tokenized exactly as training tokenizes it:
  `deltarank.evaluation.loss.held_out_loss`), and the exact-match accuracy of greedy answers where the data
  has closed answers (`deltarank.evaluation.accuracy`: `builtin:zh-sentiment:test`: 正面 / 负面;
  `builtin:math:test`: the final number);
- forgetting, as `deltarank reproduce` measures it: the mean per-token KL(base ‖ tuned), estimated as the rise
  of the loss on the base model's own samples (T = 1, untruncated) to general prompts
  (`deltarank.evaluation.drift`; written once by `measure_base` to `general_text.jsonl`, drawn again when the
  file there was drawn otherwise; each record is scored whole, on its sampled token ids, never cut at
  `seq_len`: its answer is `general_tokens` long at most), plus the loss rise on every `evaluate.forgetting`
  data spec;
- diversity: k samples per prompt, counted by `deltarank.evaluation.diversity`;
- cost: from the run's `run.json` (see `cost_of`);
- ranks: the medians over layers, per module type, of energy_90 and of the noise-floor rank of ΔW
  (`deltarank.analysis.engine.spectrum` of the run against the model it trained from). Methods that change
  no weight matrix (prompt, prefix, ptuning tuning and bottleneck adapters) have no ΔW: their ranks are {};
  beside them, the medians of the sparsity profile of ΔW (shares of entries unchanged, within tolerance, within
  rounding, and the numerical rank ÷ width);
- placement (with `evaluate: {placement: true}`): where ΔW lands among the base weights' singular directions,
  per module type (`deltarank.study.measure.placement`; the run's placement.json);
- mitigated (with `evaluate: {mitigate: λ}`): the run with each intruder direction's σ scaled by λ
  (RUN/mitigated/), evaluated as the run is: learning, forgetting, diversity (`deltarank.study.measure.mitigation`).

Models are evaluated in float32 on `device` (`auto`: CUDA when present, else the CPU), where the spectrum's
decompositions run too. Sampled generations depend on the device's random numbers: a study measured on a GPU
and the same study measured on a CPU agree in their losses to float32 rounding, not in their samples.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from deltarank.errors import InputError
from deltarank.io.training_methods import METHOD_NAMES, REGISTRY
from deltarank.study.design.evaluate_spec import HELD_OUT_PROMPTS, EvaluateSpec

logger = logging.getLogger(__name__)

NO_DELTA_METHODS = tuple(m for m in METHOD_NAMES if not REGISTRY[m].has_delta)  # prompt methods, adapter
NO_DELTA_NOTE = "no weight delta: {method} trains virtual tokens or added modules, not the model's weights"

# ------------------------------------------------------------------------------------------------ measuring


def measure_base(
    model: str, data: str, spec: EvaluateSpec, work_dir: Path, seed: int = 0, device: str = "auto"
) -> dict[str, Any]:
    """The base model's measurements (JSON-serialisable), the reference for forgetting and diversity.

    Writes work_dir/general_text.jsonl (the forgetting set, generated once: an existing file is reused only
    when it was drawn as `spec` and `seed` ask, `deltarank.evaluation.drift.current_general_text`) and, when
    diversity is asked for, work_dir/generations.jsonl.

    Returns:
        {"model", "learning", "forgetting", "diversity"} (the sections a run has, without cost and ranks).

    Raises:
        DeltarankError: a missing model or data set, bad diversity prompts.
    """
    from deltarank.analysis.engine.compute import resolve_device
    from deltarank.evaluation.drift import (
        GENERAL_TEXT,
        current_general_text,
        general_text,
        write_general_text,
    )
    from deltarank.evaluation.models import ready_for_evaluation
    from deltarank.train.models import load_model, load_tokenizer, resolve_model

    spec.check_sets(data)
    source = resolve_model(model)
    tokenizer = load_tokenizer(source)
    base = ready_for_evaluation(load_model(source), resolve_device(device))
    work_dir.mkdir(parents=True, exist_ok=True)
    general_path = work_dir / GENERAL_TEXT
    if current_general_text(general_path, spec.general_tokens, spec.general_samples, seed) is None:
        if general_path.is_file():
            logger.info("%s was drawn otherwise (older sampling or sizes): sampling it again", general_path)
        records = general_text(base, tokenizer, spec.general_tokens, seed, spec.general_samples)
        write_general_text(general_path, records)
    result = _measure(base, tokenizer, data, spec, work_dir, seed)
    return {"model": source.describe(), **result}


def measure_run(
    run_dir: Path,
    model: str,
    data: str,
    spec: EvaluateSpec,
    base: dict[str, Any],
    base_dir: Path,
    seed: int = 0,
    device: str = "auto",
) -> dict[str, Any]:
    """One finished `train` run measured against `base` (`measure_base`'s result, whose work dir is base_dir).

    Args:
        run_dir: The run's `train` output directory (run.json and the saved model or adapter).
        model: What the run trained from (for a stacked run the parent's output directory).
        data: The run's training data spec (picks the default held-out and accuracy sets).
        spec: What to measure.
        base: The base model's measurements: forgetting and learning changes are taken against them.
        base_dir: measure_base's work dir (its general_text.jsonl is the forgetting set).
        seed: Seed of the diversity samples.
        device: Where the model is evaluated and the spectrum runs (`auto`, `cpu`, `cuda`, ...).

    Returns:
        {"learning", "forgetting", "diversity", "cost", "ranks"} and, for a method without ΔW, "ranks_note";
        with `spec.placement` and a ΔW, "placement" and "placement_file"; with `spec.mitigate` and a ΔW,
        "mitigated".
        Writes run_dir/generations.jsonl when diversity is asked for.

    Raises:
        DeltarankError: no run.json in run_dir, a missing model, data or forgetting set.
    """
    from deltarank.evaluation.drift import GENERAL_TEXT, current_general_text
    from deltarank.evaluation.models import EvalModels
    from deltarank.io.model_ref import read_run_record
    from deltarank.io.run_directory import RunDirectory
    from deltarank.study.measure.spectra import measure_spectra, rank_medians, spectrum_file
    from deltarank.train.models import load_tokenizer, resolve_model

    record = read_run_record(run_dir)
    method = str(record.get("method"))
    spec.check_sets(data)
    general = current_general_text(base_dir / GENERAL_TEXT, spec.general_tokens, spec.general_samples)
    if general is None:
        raise InputError(base_dir, f"no {GENERAL_TEXT} drawn as evaluate: asks: measure the base model first")
    source = resolve_model(model)
    tokenizer = load_tokenizer(source)
    loader = EvalModels(source, device)

    def measure(loaded: Any, out_dir: Path) -> dict[str, Any]:  # learning, forgetting, diversity vs base
        found = _measure(loaded, tokenizer, data, spec, out_dir, seed, base_dir=base_dir)
        _add_changes(found, base)
        return found

    found = loader.evaluate(run_dir, lambda tuned: measure(tuned, run_dir))
    final_step = int(record.get("steps") or 0)
    steps = RunDirectory(run_dir).steps(final_step) if spec.checkpoints else [(final_step, run_dir)]
    result: dict[str, Any] = {**found, "cost": cost_of(record)}
    if spec.checkpoints:
        tokens_per_step = float(record.get("tokens_seen") or 0) / max(final_step, 1)
        curve = []
        for step, path in steps[:-1]:
            point = loader.evaluate(path, lambda m: _losses(m, tokenizer, data, spec, general))
            curve.append({"step": step, "tokens": round(step * tokens_per_step), **point})
        final = {"held_out_loss": found["learning"].get("held_out_loss")}
        final["general_loss"] = found["forgetting"].get("general_loss")
        curve.append({"step": final_step, "tokens": round(final_step * tokens_per_step), **final})
        result["checkpoints"] = [_point_changes(point, base) for point in curve]
    if spec.functional_rank and method not in NO_DELTA_METHODS:
        from deltarank.study.measure.functional_rank import measure_functional_rank

        result["functional_rank"] = measure_functional_rank(
            loader, run_dir, tokenizer, spec, data, general, measured=(base, found)
        )
    if spec.mitigate is not None and method not in NO_DELTA_METHODS:
        result["mitigated"] = _mitigated(loader, source.weights, run_dir, spec, device, measure)
    del loader
    if method in NO_DELTA_METHODS:
        result["ranks"] = {}
        result["ranks_note"] = NO_DELTA_NOTE.format(method=method)
        return result
    final_spectrum = measure_spectra(
        source.weights, run_dir.parent, run_dir.name, steps, device, per_step=spec.checkpoints
    )
    result["ranks"] = rank_medians(final_spectrum)
    result["spectrum"] = spectrum_file(run_dir.name)
    for point in result.get("checkpoints", []):
        point["spectrum"] = spectrum_file(run_dir.name, point["step"])
    if spec.placement:
        result.update(_placement(source.weights, run_dir, device))
    return result


def _placement(base_weights: Path, run_dir: Path, device: str) -> dict[str, Any]:
    """The row's `placement` (per module type, the medians of run_dir/placement.json, which it writes) and
    `placement_file` (that file, relative to the study directory)."""
    from deltarank.study.measure.placement import measure_placement, placement_file, placement_medians

    found = measure_placement(base_weights, run_dir, device)
    return {"placement": placement_medians(found), "placement_file": placement_file(run_dir.name)}


def _mitigated(
    loader: Any,
    base_weights: Path,
    run_dir: Path,
    spec: EvaluateSpec,
    device: str,
    measure: Any,
) -> dict[str, Any]:
    """The row's `mitigated`: the run mitigated at λ = spec.mitigate and measured by `measure` (the run's own
    evaluation), without its sequence-by-sequence losses (their intervals are kept)."""
    from deltarank.study.measure.mitigation import measure_mitigated

    assert spec.mitigate is not None
    block = measure_mitigated(loader, base_weights, run_dir, spec.mitigate, device, measure)
    block.pop("per_sequence", None)
    return block


def _losses(
    model: Any, tokenizer: Any, data: str, spec: EvaluateSpec, general: list[dict[str, Any]]
) -> dict[str, Any]:
    """The held-out loss and the general-text loss of one checkpoint (a point of the learning curve)."""
    from deltarank.evaluation.drift import drift_loss
    from deltarank.evaluation.loss import held_out_loss

    held_out = spec.held_out_for(data)
    loss = None
    if held_out is not None:
        loss = held_out_loss(model, tokenizer, held_out, spec.seq_len, spec.held_out_sequences)["loss"]
    return {"held_out_loss": loss, "general_loss": drift_loss(model, tokenizer, general)["general_loss"]}


def _point_changes(point: dict[str, Any], base: Mapping[str, Any]) -> dict[str, Any]:
    """A learning-curve point with its held-out loss change and general-text loss rise against the base."""
    base_held_out = base.get("learning", {}).get("held_out_loss")
    base_general = base.get("forgetting", {}).get("general_loss")
    changes = {
        "held_out_loss_change": None
        if point["held_out_loss"] is None or base_held_out is None
        else point["held_out_loss"] - base_held_out,
        "general_loss_rise": None
        if point["general_loss"] is None or base_general is None
        else point["general_loss"] - base_general,
    }
    return {**point, **changes}


def _measure(
    model: Any,
    tokenizer: Any,
    data: str,
    spec: EvaluateSpec,
    out_dir: Path,
    seed: int,
    base_dir: Path | None = None,
) -> dict[str, Any]:
    """learning, forgetting (absolute losses) and diversity of one loaded model, and `per_sequence`: the
    held-out and general-text losses sequence by sequence (what the intervals of its changes pair up)."""
    from deltarank.evaluation.drift import GENERAL_TEXT

    learning = _learning(model, tokenizer, data, spec)
    forgetting = _forgetting(model, tokenizer, spec, (base_dir or out_dir) / GENERAL_TEXT)
    per_sequence = {
        name: part
        for name, part in (
            ("held_out", learning.pop("per_sequence", None)),
            ("general", forgetting.pop("per_sequence", None)),
        )
        if part is not None
    }
    found = {
        "learning": learning,
        "forgetting": forgetting,
        "diversity": _diversity(model, tokenizer, spec, data, out_dir, seed),
    }
    if per_sequence:
        found["per_sequence"] = per_sequence
    return found


def _learning(model: Any, tokenizer: Any, data: str, spec: EvaluateSpec) -> dict[str, Any]:
    """The held-out loss and, where the run's data has closed answers, the accuracy of one loaded model."""
    from deltarank.evaluation.loss import held_out_loss

    learning: dict[str, Any] = {}
    held_out = spec.held_out_for(data)
    if held_out is None:
        learning["held_out_note"] = "no held-out set: name one in evaluate.held_out"
    else:
        loss = held_out_loss(model, tokenizer, held_out, spec.seq_len, spec.held_out_sequences)
        learning.update(held_out=held_out, held_out_sequences=loss["examples"], held_out_loss=loss["loss"])
        learning["per_sequence"] = loss["per_sequence"]
    accuracy = spec.accuracy_for(data)
    if accuracy is not None:
        learning.update(
            accuracy_set=accuracy, **_accuracy(model, tokenizer, accuracy, spec.accuracy_examples)
        )
    return learning


def _forgetting(model: Any, tokenizer: Any, spec: EvaluateSpec, general_path: Path) -> dict[str, Any]:
    """The loss of one loaded model on the general-text set at general_path and on every forgetting set."""
    from deltarank.evaluation.drift import drift_loss, read_general_text
    from deltarank.evaluation.loss import held_out_loss

    # whole records: answers are general_tokens long at most
    forgetting: dict[str, Any] = drift_loss(model, tokenizer, read_general_text(general_path))
    for name in spec.forgetting:
        forgetting[f"loss:{name}"] = held_out_loss(
            model, tokenizer, name, spec.seq_len, spec.held_out_sequences
        )["loss"]
    return forgetting


def _diversity(
    model: Any, tokenizer: Any, spec: EvaluateSpec, data: str, out_dir: Path, seed: int
) -> dict[str, Any]:
    """The diversity of one loaded model's samples ({} when no diversity prompts are asked for, or the default
    held-out prompts have no held-out set); writes out_dir/generations.jsonl."""
    from deltarank.evaluation.diversity import GENERATIONS_FILE, measure_diversity
    from deltarank.evaluation.prompts import diversity_prompts, held_out_prompts

    if spec.diversity_prompts == HELD_OUT_PROMPTS:
        held_out = spec.held_out_for(data)
        if held_out is None:
            return {}
        prompts, prompt_set = held_out_prompts(held_out, spec.diversity_n), f"{HELD_OUT_PROMPTS}:{held_out}"
    elif spec.diversity_prompts is None:
        return {}
    else:
        prompts, prompt_set = (
            diversity_prompts(spec.diversity_prompts, spec.diversity_n),
            spec.diversity_prompts,
        )
    diversity = measure_diversity(
        model,
        tokenizer,
        prompts,
        samples=spec.diversity_samples,
        temperature=spec.temperature,
        top_p=spec.top_p,
        max_new_tokens=spec.max_new_tokens,
        seed=seed,
        execute=spec.execute,
        generations_path=out_dir / GENERATIONS_FILE,
    )
    diversity["prompt_set"] = prompt_set
    return diversity


def _accuracy(model: Any, tokenizer: Any, name: str, examples: int) -> dict[str, Any]:
    """Exact-match accuracy of greedy answers on a closed-answer built-in set."""
    from deltarank.evaluation.accuracy import accuracy

    found = accuracy(model, tokenizer, name, examples)
    return {"accuracy": found["accuracy"], "accuracy_examples": found["examples"]}


def _add_changes(found: dict[str, Any], base: Mapping[str, Any]) -> None:
    """Add each run's change against the base: held-out loss change and the forgetting rises, and the
    evaluation-noise interval of the held-out loss change and of the general-text loss rise (a paired
    bootstrap over the sequences both were measured on: `deltarank.evaluation.paired`)."""
    from deltarank.evaluation.paired import paired_difference

    base_learning = base.get("learning", {})
    learning = found["learning"]
    if "held_out_loss" in learning and base_learning.get("held_out_loss") is not None:
        learning["held_out_loss_change"] = learning["held_out_loss"] - base_learning["held_out_loss"]
    if "accuracy" in learning and base_learning.get("accuracy") is not None:
        learning["accuracy_change"] = learning["accuracy"] - base_learning["accuracy"]
    base_forgetting = base.get("forgetting", {})
    forgetting = found["forgetting"]
    for key in [k for k in forgetting if k == "general_loss" or k.startswith("loss:")]:
        if base_forgetting.get(key) is not None and forgetting[key] is not None:
            rise_key = "general_loss_rise" if key == "general_loss" else "rise:" + key.removeprefix("loss:")
            forgetting[rise_key] = forgetting[key] - base_forgetting[key]
    ours, theirs = found.get("per_sequence") or {}, base.get("per_sequence") or {}
    for name, section, key in (
        ("held_out", learning, "held_out_loss_change"),
        ("general", forgetting, "general_loss_rise"),
    ):
        if key in section and name in ours and name in theirs:
            interval = paired_difference(ours[name], theirs[name])
            if interval is not None:
                section[f"{key}_ci95"] = [interval["ci95_low"], interval["ci95_high"]]


# ------------------------------------------------------------------------------------------------ cost, ranks


def cost_of(record: Mapping[str, Any]) -> dict[str, Any]:
    """The cost columns of a run, from its run.json.

    device_seconds = train_seconds (training time of every session of a resumed run; loading and saving
    left out) × world_size (training processes, one device each; a CPU run is one process, one device).
    """
    parameters = record.get("parameters", {})
    train_seconds = record.get("train_seconds")
    world = int(record.get("world_size") or 1)
    return {
        "trainable_parameters": parameters.get("trainable"),
        "trainable_share": parameters.get("trainable_share_of_base"),
        "total_parameters": parameters.get("total"),
        "tokens": record.get("tokens_seen"),
        "steps": record.get("steps"),
        "wall_seconds": record.get("wall_seconds"),
        "train_seconds": train_seconds,
        "devices": world,
        "device": record.get("device"),
        "device_seconds": None if train_seconds is None else float(train_seconds) * world,
        "tokens_per_second": record.get("tokens_per_second"),
        "peak_memory_bytes": record.get("peak_memory_bytes"),
        "peak_memory_kind": record.get("peak_memory_kind"),
        "stored_bytes": record.get("stored_bytes"),
    }
