"""The `evaluate:` section of a study file: what `deltarank.study.measure.run_measures` measures on every model.

`EvaluateSpec` holds its keys and their defaults (small: a study evaluates in minutes on CPU), parses and
checks a study file's mapping (`EvaluateSpec.from_mapping`), picks the held-out and closed-answer sets of a
run from its training data, and checks that the sets it names exist before any model loads.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from deltarank.errors import InputError
from deltarank.evaluation import defaults

# keys a run's measurement.json hash leaves out: measured at the study level (the subspace of pairs of runs)
STUDY_LEVEL_KEYS = ("intruders", "similarity", "seed_null", "merge")
# keys added after studies were measured: left out of the hash at their default, so those measurements hold
LATER_KEYS = {"checkpoints": False, "functional_rank": False, "placement": False, "mitigate": None}
HELD_OUT_PROMPTS = "held_out"  # diversity_prompts' default: prompts of the run's held-out set
ACCURACY_SETS = {"zh-sentiment": "builtin:zh-sentiment:test", "math": "builtin:math:test"}


@dataclass(frozen=True)
class EvaluateSpec:
    """The `evaluate:` section of a study file (small defaults: a study evaluates in minutes on CPU).

    Attributes:
        held_out: Data spec for the held-out loss; None: the run's `data` with `:test` (built-in sets only).
        held_out_sequences: Sequences of the held-out set to take the loss over.
        accuracy: A closed-answer set (builtin:zh-sentiment:test, builtin:math:test); None: that set when the
            run trains on builtin:zh-sentiment or builtin:math, else no accuracy.
        accuracy_examples: Examples answered for the accuracy.
        forgetting: Extra held-out data specs whose loss rise also counts as forgetting.
        general_tokens: Tokens (at most) of each base-model sample in the forgetting set.
        general_samples: Samples per general prompt in the forgetting set (drawn at T = 1, untruncated: the
            loss rise on them estimates KL(base ‖ tuned) per token, `deltarank.evaluation.drift`). A key of
            the measurement hash at every value: measurements made before it (on T = 0.7, top_p 0.9 answers)
            are redone.
        diversity_prompts: `builtin:humaneval`, a JSONL of {"prompt": ...}, or `held_out` (the default): the
            prompts of the run's held-out set (`deltarank.evaluation.prompts.held_out_prompts`); None (`null` in
            the study file): no diversity.
        diversity_n: Prompts sampled for diversity.
        diversity_samples: Samples per prompt.
        temperature: Sampling temperature of the diversity samples.
        top_p: Nucleus-sampling threshold of the diversity samples.
        max_new_tokens: Tokens per diversity sample.
        execute: Run HumanEval samples against their tests (pass/fail split).
        seq_len: Maximum tokens per held-out sequence.
        checkpoints: Also measure every complete intermediate checkpoint of each run (held-out loss,
            general-text loss and the spectrum of its ΔW): the learning curve and the rank over training.
        intruders: Count the intruder dimensions of every run with a ΔW (DIR/intruders-<run>.json).
        similarity: Pairs of run names whose ΔW subspaces are compared (φ, DIR/similarity-<a>-<b>.json).
        seed_null: For full fine-tuning runs that differ only in seed, the spectrum of W_a − W_b of the first
            two seeds (DIR/spectra/seed-null-<a>-<b>.json): the rank that training noise alone reaches.
        functional_rank: For every run with a ΔW (true) or the runs named (a list of run names), the share of
            its learning (held-out loss drop) and of its drift (forgetting) that the top k directions of every
            ΔW carry, k = 1, 2, 4, … up to the width, and k₉₀ (`deltarank.study.measure.functional_rank`). A
            list keeps the other runs' measurements: they are hashed as without it (`for_run`).
        placement: For every run with a ΔW, where it lands among the base weights' singular directions
            (`deltarank placement`: RUN/placement.json, per-module medians in the row's `placement`); base
            models have none: they are hashed as without it (`for_run`).
        merge: The merge geometry of the runs with a ΔW against one base (`deltarank similarity BASE T1 … Tn
            --merge` at its defaults: the n × n subspace overlap, TIES's sign conflicts, DARE's errors;
            DIR/merge.json, one file per base: `deltarank.study.measure.merge`), summarised in study.json's
            `subspace.merge` and report.md; a study-level key (measured after the runs, outside their hash).
        mitigate: λ in (0, 1], or None (off): every run with a ΔW is written with each intruder direction's
            singular value scaled by λ (`deltarank intruders BASE RUN --mitigate λ -o RUN/mitigated`) and that
            model evaluated as the run is (learning, forgetting, diversity), in the row's `mitigated`
            (`deltarank.study.measure.mitigation`); base models have none: hashed as without it (`for_run`).
    """

    held_out: str | None = None
    held_out_sequences: int = defaults.HELD_OUT_SEQUENCES
    accuracy: str | None = None
    accuracy_examples: int = 40
    forgetting: tuple[str, ...] = ()
    general_tokens: int = defaults.GENERAL_TOKENS
    general_samples: int = defaults.GENERAL_SAMPLES
    diversity_prompts: str | None = HELD_OUT_PROMPTS
    diversity_n: int = defaults.DIVERSITY_PROMPTS
    diversity_samples: int = defaults.DIVERSITY_SAMPLES
    temperature: float = defaults.TEMPERATURE
    top_p: float = defaults.TOP_P
    max_new_tokens: int = defaults.DIVERSITY_NEW_TOKENS
    execute: bool = False
    seq_len: int = 128
    checkpoints: bool = False
    intruders: bool = False
    similarity: tuple[tuple[str, str], ...] = ()
    seed_null: bool = False
    functional_rank: bool | tuple[str, ...] = False
    placement: bool = False
    merge: bool = False
    mitigate: float | None = None

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any] | None) -> EvaluateSpec:
        """The spec of a study file's `evaluate:` mapping (None or {}: the defaults); `max-new-tokens` and
        `max_new_tokens` are the same key.

        Raises:
            InputError: an unknown key (naming the closest valid one), a value of the wrong type or range.
        """
        if raw is None:
            return cls()
        if not isinstance(raw, Mapping):
            raise InputError("evaluate", f"must be a mapping of keys to values, got {type(raw).__name__}")
        valid = {f.name: f for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in raw.items():
            name = str(key).replace("-", "_")
            if name not in valid:
                close = difflib.get_close_matches(name, list(valid), n=1)
                hint = f"did you mean '{close[0]}'?" if close else f"valid keys: {', '.join(valid)}"
                raise InputError("evaluate", f"unknown key '{key}'; {hint}")
            values[name] = _coerce(name, value, cls.__dataclass_fields__[name].default)
        spec = cls(**values)
        from deltarank.evaluation.run import HUMANEVAL_NAMES  # here: the evaluation package imports torch

        if spec.execute and spec.diversity_prompts not in HUMANEVAL_NAMES:
            raise InputError(
                "evaluate", "execute runs HumanEval samples: it needs diversity_prompts: builtin:humaneval"
            )
        return spec

    def for_run(self, name: str | None) -> EvaluateSpec:
        """The spec one run (`name`; None: a base model) is measured and hashed with: a `functional_rank` list of
        run names becomes true for those runs and false for the others and the base models; `placement` is
        false and `mitigate` None for the base models (they have no ΔW)."""
        functional = self.functional_rank
        if isinstance(functional, tuple):
            functional = name is not None and name in functional
        return dataclasses.replace(
            self,
            functional_rank=functional,
            placement=self.placement and name is not None,
            mitigate=None if name is None else self.mitigate,
        )

    def held_out_for(self, data: str) -> str | None:
        """The held-out set of a run trained on `data` (None: none known, give `held_out`; builtin:self-samples
        has none)."""
        if self.held_out is not None:
            return self.held_out
        from deltarank.train.builtin_data import held_out_name, is_builtin

        return held_out_name(data) if is_builtin(data) else None

    def accuracy_for(self, data: str) -> str | None:
        """The closed-answer set of a run trained on `data`, or None."""
        if self.accuracy is not None:
            return self.accuracy
        from deltarank.train.builtin_data import is_builtin, parse_builtin

        return ACCURACY_SETS.get(parse_builtin(data).dataset) if is_builtin(data) else None

    def check_sets(self, data: str) -> None:
        """Fail on unknown sets of a run trained on `data` before any model loads.

        Raises:
            DeltarankError: a missing held-out or forgetting set, an accuracy set without closed answers,
                bad diversity prompts.
        """
        from deltarank.evaluation.accuracy import closed_answer_set
        from deltarank.train.builtin_data import is_builtin, parse_builtin

        for name in filter(None, (self.held_out_for(data), *self.forgetting)):
            if is_builtin(name):
                parse_builtin(name)
            elif not Path(name).is_file():
                raise InputError(name, "held-out data not found (a JSONL file or builtin:<name>:test)")
            else:
                from deltarank.train.data import read_jsonl

                read_jsonl(name)  # every line parses, before any model loads
        accuracy = self.accuracy_for(data)
        if accuracy is not None and closed_answer_set(accuracy) is None:
            raise InputError(
                accuracy, "accuracy needs a closed-answer set: builtin:zh-sentiment:test or builtin:math:test"
            )
        if self.diversity_prompts == HELD_OUT_PROMPTS:
            held_out = self.held_out_for(data)
            if held_out is not None:  # else split from the training data (checked there)
                from deltarank.evaluation.prompts import held_out_prompts

                held_out_prompts(held_out, self.diversity_n)
        elif self.diversity_prompts is not None:
            from deltarank.evaluation.prompts import diversity_prompts

            diversity_prompts(self.diversity_prompts, self.diversity_n)


def _coerce(name: str, value: Any, default: Any) -> Any:
    """A study-file value as the field's type (strings, positive ints, floats, a bool, a list of specs)."""
    problem = None
    if name == "similarity":
        pairs = value if isinstance(value, list | tuple) else None
        if pairs is not None and all(
            isinstance(p, list | tuple)
            and len(p) == 2
            and all(isinstance(v, str) for v in p)
            and p[0] != p[1]
            for p in pairs
        ):
            return tuple((str(a), str(b)) for a, b in pairs)
        problem = "a list of pairs of run names, e.g. [[full, lora]]"
    elif name == "functional_rank":
        if isinstance(value, bool):
            return value
        if isinstance(value, list | tuple) and value and all(isinstance(v, str) for v in value):
            return tuple(str(v) for v in value)
        problem = "true, false or a list of run names, e.g. [full, lora]"
    elif name == "forgetting":
        items = [value] if isinstance(value, str) else value
        if isinstance(items, list | tuple) and all(isinstance(v, str) for v in items):
            return tuple(items)
        problem = "a data spec or a list of data specs"
    elif name == "mitigate":
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if value is None or (number and 0 < value <= 1):
            return None if value is None else float(value)
        problem = "λ, a number in (0, 1] (the factor on each intruder's singular value), or null (off)"
    elif name in ("held_out", "accuracy", "diversity_prompts"):
        if value is None or isinstance(value, str):
            return value
        problem = "a data spec (text)"
    elif isinstance(default, bool):
        if isinstance(value, bool):
            return value
        problem = "true or false"
    elif isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
            return value
        problem = "a positive integer"
    elif isinstance(default, float):
        if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
            if name == "top_p" and value > 1:
                problem = "a number in (0, 1]"
            else:
                return float(value)
        else:
            problem = "a positive number"
    raise InputError("evaluate", f"{name} must be {problem}, got {value!r}")
