"""What a study does not measure, said at the start of the run (one stderr line) and in report.md
(study.json: `study.not_measured`), so that a missing column is never silent.

A study measures the held-out loss of every run (from `evaluate.held_out`, a built-in set's `:test` split, or a
part split from the training file: `deltarank.study.design.held_out_split`), forgetting, diversity (by default on the
held-out set's prompts), cost and ranks. What can be missing: accuracy (only data with closed answers has it),
diversity (`diversity_prompts: null`), the pass rate of HumanEval samples (`execute: false`).
"""

from __future__ import annotations

from deltarank.study.design.evaluate_spec import HELD_OUT_PROMPTS
from deltarank.study.design.study import Study


def not_measured(study: Study) -> list[str]:
    """Each measurement the study leaves out, with the reason and how to ask for it."""
    from deltarank.evaluation.run import HUMANEVAL_NAMES
    from deltarank.study.design.held_out_split import needs_split

    spec = study.evaluate
    datas = list(dict.fromkeys(str(run.config["data"]) for run in study.runs))
    missing = []
    no_held_out = [d for d in datas if spec.held_out_for(d) is None and not needs_split(spec, d)]
    if no_held_out:
        missing.append(f"held-out loss for {', '.join(no_held_out)} (no held-out set: evaluate.held_out)")
    no_accuracy = [d for d in datas if spec.accuracy_for(d) is None]
    if no_accuracy:
        missing.append(
            f"accuracy for {', '.join(no_accuracy)} (no closed-answer set: evaluate.accuracy names one)"
        )
    if spec.diversity_prompts is None:
        missing.append(
            f"diversity (evaluate.diversity_prompts is null; {HELD_OUT_PROMPTS} samples the held-out set)"
        )
    elif spec.diversity_prompts in HUMANEVAL_NAMES and not spec.execute:
        missing.append("pass rate of the HumanEval samples (evaluate.execute is false)")
    return missing


def not_measured_line(missing: list[str]) -> str | None:
    """The one stderr line of `not_measured` (None when everything is measured)."""
    return f"study: not measured: {'; '.join(missing)}" if missing else None
