"""`deltarank reproduce`'s options applied to the study preset `quick`: the study file it runs."""

from __future__ import annotations

from typing import Any

SMOKE_HELD_OUT_SEQUENCES = 8  # a shortened run (--max-steps below the schedule's) measures on less
SMOKE_GENERAL_TOKENS = 16
MATH_EXAMPLES = {"quick": 24, "long": 200}  # math exact-match accuracy: held-out problems answered


def reproduction_study(
    quick: bool = True,
    domain: str = "code",
    model: str = "smollm2-135m",
    lora_r: int = 16,
    seed: int = 0,
    max_steps: int | None = None,
    subspace: bool = True,
) -> dict[str, Any]:
    """The study file of `deltarank reproduce` with these options: the preset `quick` (`cpu` size for
    --quick, `full` for --long) with the options applied; the defaults give the preset unchanged.

    `max_steps` below the schedule's (a smoke run) also measures on fewer held-out sequences and shorter
    general text; `subspace=False` drops the intruders and the full-vs-LoRA similarity.
    """
    from deltarank.study.design.study_file import preset_path, read_study_yaml

    path = preset_path("quick", "cpu" if quick else "full")
    raw: dict[str, Any] = read_study_yaml(path.read_text(encoding="utf-8"))
    base, evaluate = raw["base"], raw.setdefault("evaluate", {})
    changed = (domain, model, lora_r, seed, max_steps) != ("code", "smollm2-135m", 16, 0, None)
    base.update(model=model, data=f"builtin:{domain}", seed=seed)
    for run in raw["runs"]:
        if run["method"] == "lora":
            run.update(lora_r=lora_r, lora_alpha=2 * lora_r)
    if max_steps is not None:
        planned = int(base["max_steps"])
        base.update(max_steps=max_steps, save_steps=max(1, max_steps // 3))
        if max_steps < planned:
            evaluate["held_out_sequences"] = min(
                int(evaluate.get("held_out_sequences", 32)), SMOKE_HELD_OUT_SEQUENCES
            )
            evaluate["general_tokens"] = SMOKE_GENERAL_TOKENS
            evaluate["general_samples"] = 1  # one answer per general prompt, as before the KL set
    if domain == "math":
        evaluate["accuracy_examples"] = MATH_EXAMPLES["quick" if quick else "long"]
    if not subspace:
        evaluate.update(intruders=False, similarity=[])
    if changed:
        raw["description"] = (
            f"Full fine-tuning vs LoRA r={lora_r} on builtin:{domain}, {base['max_steps']} steps, seed {seed} "
            f"(deltarank reproduce {'--quick' if quick else '--long'})."
        )
    return raw
