"""Everything a study reads, checked before anything is written: `deltarank study` (and its `--dry-run`) calls
`check_study_inputs` before study.yaml, a run directory or a held-out split exists, so a bad input leaves the
study directory as it was and the corrected study is not refused as "a different study".

Checked: every root model resolves (`deltarank.train.models.resolve_model`, no loading), every training and
`eval_data` file exists and parses line by line (`deltarank.train.data.read_jsonl`), built-in names are known,
and every set `evaluate:` names for a run's data (held-out, forgetting, accuracy, diversity prompts) exists and
parses; a file that `deltarank.study.design.held_out_split` must split holds enough examples; `execute: true` finds
the bubblewrap sandbox working. `study_input_paths`
lists the paths a study reads, for `refuse_overlap`.
"""

from __future__ import annotations

from pathlib import Path

from deltarank.errors import DeltarankError, InputError
from deltarank.study.design.evaluate_spec import HELD_OUT_PROMPTS
from deltarank.study.design.study import Study


def check_study_inputs(study: Study) -> None:
    """Fail before any run on a model or data set that does not exist or does not parse (naming the run).

    Raises:
        InputError: a model that cannot be resolved, a data file that is missing or malformed, a missing or
            malformed `evaluate:` set, a training file too small to split a held-out part from.
        DeltarankError: a named model whose package is missing, an unknown built-in set, `execute: true`
            where bubblewrap cannot run the sandbox.
    """
    from deltarank.study.design.held_out_split import check_splittable, needs_split
    from deltarank.train.models import resolve_model

    if study.evaluate.execute:  # generated code runs only in the sandbox: refuse now, not after training
        from deltarank.evaluation.sandbox import Limits, isolation

        isolation(Limits())
    checked: set[str] = set()
    models: set[str] = set()
    for run in study.runs:
        model = str(run.config["model"])
        if run.parent is None and model not in models:
            try:
                resolve_model(model)
            except DeltarankError as exc:
                raise InputError(f"run {run.name}", str(exc)) from None
            models.add(model)
        for spec in filter(None, (run.config.get(k) for k in ("data", "eval_data", "replay_data"))):
            if str(spec) not in checked:
                check_data(str(spec), f"run {run.name}: data file not found")
                checked.add(str(spec))
        null = (run.recommend or {}).get("null")
        if null is not None and not Path(str(null)).is_file():
            raise InputError(null, f"run {run.name}: recommend: null spectrum file not found")
        data = str(run.config["data"])
        if f"evaluate:{data}" in checked:
            continue
        study.evaluate.check_sets(data)
        if needs_split(study.evaluate, data):
            check_splittable(data)
        checked.add(f"evaluate:{data}")


def check_data(spec: str, missing: str = "data file not found") -> None:
    """A built-in name is known, a JSONL file exists and every line is a record of one shape.

    Raises:
        InputError: a missing file (`missing` says which), a malformed line (naming it), no records.
        DeltarankError: an unknown built-in set.
    """
    from deltarank.train.builtin_data import is_builtin, parse_builtin

    if is_builtin(spec):
        parse_builtin(spec)
        return
    if not Path(spec).is_file():
        raise InputError(spec, missing)
    from deltarank.train.data import read_jsonl

    read_jsonl(spec)


def study_input_paths(study: Study) -> list[str]:
    """Every path the study reads (root models, data, `evaluate:` sets): the output may not be, contain or lie
    inside any of them (`deltarank.io.atomic.refuse_overlap`; names that are not paths are skipped there)."""
    from deltarank.evaluation.run import HUMANEVAL_NAMES  # here: the evaluation package imports torch

    paths: list[str] = []
    for run in study.runs:
        if run.parent is None:
            paths.append(str(run.config["model"]))
        paths += [str(v) for k in ("data", "eval_data", "replay_data") if (v := run.config.get(k))]
        paths += [str(run.recommend["null"])] if run.recommend and run.recommend.get("null") else []
    spec = study.evaluate
    prompts = (
        None if spec.diversity_prompts in (HELD_OUT_PROMPTS, *HUMANEVAL_NAMES) else spec.diversity_prompts
    )
    paths += [str(v) for v in (spec.held_out, spec.accuracy, prompts, *spec.forgetting) if v]
    return list(dict.fromkeys(paths))
