"""A study's data model: its runs (`RunSpec`), the study they make up (`Study`), and `short_hash`, which names
runs and fingerprints studies.

Reading a study file is `deltarank.study.design.study_file`; turning its `base:`, `grid:` and `runs:` sections into
RunSpecs and naming them is `deltarank.study.design.grid`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deltarank.study.design.evaluate_spec import EvaluateSpec
from deltarank.train.config import TrainConfig

DATA_SIZE = "data_size"  # a study's name for TrainConfig.max_examples
# Keys that say where and how a run is shown, not what it computes: left out of a run's identity (its hash).
NOT_IDENTITY = ("output_dir", "resume", "force", "device", "progress", "download", "report_to")
# Keys added to TrainConfig after run names were first hashed, with the value that computes what runs computed
# before them: left out of a run's identity at that value, so the names of existing studies' runs (and the check
# of a saved run's settings) stay as they were.
LATER_KEYS = {
    "weight_decay_mode": "coupled",
    "replay_data": None,
    "replay_fraction": None,
    "lora_rank_pattern": None,
    "lora_alpha_pattern": None,
    "lora_init": "default",
}
HASH_LENGTH = 6
# The TrainConfig keys a `recommend:` run takes from its recommendation (`deltarank recommend`'s adapter_config.json).
RECOMMENDED_KEYS = ("lora_r", "lora_alpha", "target_modules", "lora_rank_pattern", "lora_alpha_pattern")


@dataclass(frozen=True)
class RunSpec:
    """One run of a study.

    Attributes:
        name: Its directory name under the study directory.
        coordinates: Its grid keys and values (for an explicit run, the keys it sets), `data_size` by that name.
        config: Its TrainConfig values (canonical keys, `max_examples` for data_size), without output_dir.
        parent: The run it starts from (a stacked run), or None.
        recommend: A `recommend:` run's spec (`deltarank.study.design.recommend_spec`): the run whose ΔW gives
            its LoRA ranks (`from`), the policy (energy, budget or budget_rank), `null`, and `source`, a hash
            of that run's identity; None for any other run.
    """

    name: str
    coordinates: dict[str, Any]
    config: dict[str, Any]
    parent: str | None = None
    explicit: bool = False  # given under runs: (not a grid point)
    recommend: dict[str, Any] | None = None

    def train_config(self, run_dir: Path, model: str | None = None, **overrides: Any) -> TrainConfig:
        """The TrainConfig of this run, writing to `run_dir` (`model`: a stacked run's parent output)."""
        values = {**self.config, "output_dir": str(run_dir), **overrides}
        if model is not None:
            values["model"] = model
        return TrainConfig(**values)

    def identity(self, recommended: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The resolved TrainConfig values that decide what this run computes (the basis of its hash); a
        `recommend:` run's also hold its spec, and `recommended` (its recommendation's RECOMMENDED_KEYS) in place
        of its own LoRA keys."""
        resolved = identity_values(self.train_config(Path("run"), **(recommended or {})).resolved().to_dict())
        if self.parent is not None:
            resolved["model"] = f"run:{self.parent}"
        if self.recommend is not None:
            resolved["recommend"] = dict(self.recommend)
        return resolved

    def depends_on(self) -> list[str]:
        """The runs that must finish before this one: its parent and the run it takes its ranks from."""
        found = [self.parent, (self.recommend or {}).get("from")]
        return [name for name in found if name is not None]

    @property
    def data_size(self) -> int | None:
        value = self.config.get("max_examples")
        return int(value) if value is not None else None


@dataclass(frozen=True)
class Study:
    """A parsed study file: its runs (grid and explicit, parents before children) and what to evaluate."""

    name: str
    description: str
    runs: tuple[RunSpec, ...]
    evaluate: EvaluateSpec
    resolved: dict[str, Any]  # the study file with canonical keys (written to DIR/study.yaml)

    @property
    def fingerprint(self) -> str:
        """A hash of the resolved study: the same study file, however spelt, has the same one."""
        return short_hash(self.resolved, 12)

    def run(self, name: str) -> RunSpec:
        return next(r for r in self.runs if r.name == name)

    def levels(self) -> list[list[RunSpec]]:
        """The runs in waves: runs without a parent (or a `recommend:` source) first, then the runs that depend on
        them, and so on."""
        depth: dict[str, int] = {}
        for run in self.runs:  # parents and sources come first (checked when parsing)
            depth[run.name] = max((depth[name] + 1 for name in run.depends_on()), default=0)
        waves: list[list[RunSpec]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
        for run in self.runs:
            waves[depth[run.name]].append(run)
        return waves

    def root_model(self, run: RunSpec) -> str:
        """The base model a run descends from (a stacked run's root ancestor's model)."""
        while run.parent is not None:
            run = self.run(run.parent)
        return str(run.config["model"])


def identity_values(config: dict[str, Any]) -> dict[str, Any]:
    """A resolved TrainConfig dict without the keys that do not decide what a run computes (`NOT_IDENTITY`, and
    `LATER_KEYS` at their former behaviour)."""
    return {
        k: v
        for k, v in config.items()
        if k not in NOT_IDENTITY and not (k in LATER_KEYS and v == LATER_KEYS[k])
    }


def short_hash(value: Any, length: int = HASH_LENGTH) -> str:
    """The first `length` hex digits of the SHA-256 of `value`'s canonical JSON."""
    text = json.dumps(value, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def run_model(run: RunSpec, out_dir: Path) -> str:
    """What a run trains from: its model, or its parent run's output directory."""
    return str(out_dir / run.parent) if run.parent is not None else str(run.config["model"])
