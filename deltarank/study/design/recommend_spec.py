"""A study run's `recommend:` key: a LoRA run whose ranks come from another run's measured ΔW.

```yaml
runs:
  - {name: full, method: full, lr: 5.0e-5}
  - {name: recommended, method: lora, lr: 5.0e-4, recommend: {from: full, budget_rank: 16}}
```

Before the run trains, the runner computes `deltarank recommend` of the `from:` run against the model it trained
from, with exactly one policy (`energy: τ`, `budget: N` or `budget_rank: R`, and an optional `null:` spectrum
file), into DIR/recommendations/<run>-<hash of the spec>/ (adapter_config.json + recommendation.json), and trains
with its lora_r, lora_alpha, target_modules, lora_rank_pattern and lora_alpha_pattern; the run's other keys are
its own. The spec, with a hash of the source run's identity, is part of the run's identity: a change of either
retrains it.

`from:` names an earlier run with a ΔW (full fine-tuning or any weight-changing method) as `from:` does: its full
name, the readable part of a grid run's name, or that part without the seed; a name that matches runs of several
seeds takes the one of this run's seed. In a study whose grid has a `seed` axis, a `recommend:` run that sets no
seed is made once per seed (named `<name>-s<seed>`), each from the source run of its seed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from deltarank.errors import InputError
from deltarank.io.training_methods import REGISTRY
from deltarank.study.design.study import RunSpec, short_hash

KEY = "recommend"
POLICIES = ("energy", "budget", "budget_rank")
SPEC_KEYS = ("from", *POLICIES, "null")
SEED = "seed"
METHOD = "lora"  # the method a recommend: run trains with (peft's rank_pattern is LoRA's)


def expand_seeds(entries: Any, axes: Mapping[str, list[dict[str, Any]]]) -> Any:
    """The `runs:` entries with each `recommend:` entry that sets no seed made once per seed of the grid's
    `seed` axis (`<name>-s<seed>`, `seed: <seed>`); the entries unchanged without that axis."""
    seeds = [point[SEED] for point in axes.get(SEED, []) if SEED in point]
    if not seeds or not isinstance(entries, list):
        return entries
    found: list[Any] = []
    for entry in entries:
        if isinstance(entry, Mapping) and KEY in entry and SEED not in entry and entry.get("name"):
            found += [{**entry, "name": f"{entry['name']}-s{seed}", SEED: seed} for seed in seeds]
        else:
            found.append(entry)
    return found


def recommend_spec(
    raw: Any,
    run: RunSpec,
    known: Sequence[RunSpec],
    source: str | Path,
    where: str,
    label: Callable[[Mapping[str, Any]], str],
) -> dict[str, Any]:
    """The checked spec of a run's `recommend:` mapping: `from` (the source run's name), its one policy,
    `null` when given, and `source` (a hash of the source run's identity).

    Args:
        raw: The `recommend:` value as read.
        run: The run that holds it (its config and seed).
        known: The runs before it (grid runs and earlier `runs:` entries).
        source: The study file, named in errors.
        where: The entry, named in errors (`runs[3]`).
        label: The readable name of a grid run's coordinates (`deltarank.study.design.grid.readable_name`).

    Raises:
        InputError: not a mapping, an unknown key, no `from:` or not exactly one policy, a value out of range,
            a `from:` that names no earlier run (or several) or a run without ΔW, a run that is not LoRA, or a
            source that trained from another model.
    """
    here = f"{where}: recommend:"
    if not isinstance(raw, Mapping):
        raise InputError(
            source, f"{here} must be a mapping {{from: RUN, energy: τ | budget: N | budget_rank: R}}"
        )
    unknown = [str(k) for k in raw if k not in SPEC_KEYS]
    if unknown:
        raise InputError(source, f"{here} unknown key '{unknown[0]}'; valid: {', '.join(SPEC_KEYS)}")
    if run.config.get("method") != METHOD:
        raise InputError(
            source,
            f"{here} run {run.name} is a {run.config.get('method')} run; recommended ranks train method: lora",
        )
    if raw.get("from") is None:
        raise InputError(source, f"{here} give from: RUN, the run whose ΔW gives the ranks")
    given = [k for k in POLICIES if raw.get(k) is not None]
    if len(given) != 1:
        raise InputError(source, f"{here} give exactly one of energy: τ, budget: N and budget_rank: R")
    policy = given[0]
    spec: dict[str, Any] = {"from": _source(str(raw["from"]), run, known, source, here, label).name}
    spec[policy] = _policy_value(policy, raw[policy], source, here)
    if raw.get("null") is not None:
        spec["null"] = str(raw["null"])
    spec["source"] = short_hash(next(r for r in known if r.name == spec["from"]).identity())
    return spec


def written(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A spec as the resolved study file holds it (without the source's hash, computed again when read)."""
    return {k: v for k, v in spec.items() if k in SPEC_KEYS}


def _policy_value(policy: str, value: Any, source: str | Path, here: str) -> float | int:
    if policy == "energy":
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 < float(value) <= 1.0:
            raise InputError(source, f"{here} energy must be a share τ in (0, 1], got {value!r}")
        return float(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        what = "a number of parameters" if policy == "budget" else "a LoRA rank"
        raise InputError(source, f"{here} {policy} must be {what} of at least 1, got {value!r}")
    return int(value)


def _source(
    wanted: str,
    run: RunSpec,
    known: Sequence[RunSpec],
    source: str | Path,
    here: str,
    label: Callable[[Mapping[str, Any]], str],
) -> RunSpec:
    """The run `from:` names (full name, a grid run's readable name with or without its seed); of several, the one
    of this run's seed; it must have a ΔW and have trained from the model this run trains from."""

    def unseeded(r: RunSpec) -> str:
        return label({k: v for k, v in r.coordinates.items() if k != SEED})

    matches = [r for r in known if r.name == wanted]
    if not matches:
        grid = [r for r in known if not r.explicit]
        matches = [r for r in grid if r.name.rsplit("-", 1)[0] == wanted] or [
            r for r in grid if unseeded(r) == wanted
        ]
        if len(matches) > 1:
            matches = [r for r in matches if r.config.get(SEED) == run.config.get(SEED)]
    if len(matches) != 1:
        problem = "names no earlier run" if not matches else "is ambiguous (name the run in full)"
        raise InputError(source, f"{here} from: {wanted!r} {problem}")
    found = matches[0]
    method = str(found.config.get("method"))
    if method not in REGISTRY or not REGISTRY[method].has_delta:
        raise InputError(
            source,
            f"{here} from: {found.name} is a {method} run, which changes no weight: no ΔW to take ranks from",
        )
    theirs = f"run:{found.parent}" if found.parent else found.config.get("model")
    mine = f"run:{run.parent}" if run.parent else run.config.get("model")
    if theirs != mine:
        raise InputError(
            source,
            f"{here} from: {found.name} trained from {theirs}, this run from {mine}: its ranks are of "
            "another model's matrices",
        )
    return found
