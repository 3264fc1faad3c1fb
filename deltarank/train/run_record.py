"""`run.json`: the training-cost and provenance record of one run (what comparative studies report).

Layout (`schema: deltarank.train-run/1`): method, parameters {trainable, total, trainable_fraction},
tokens_seen, steps, wall_seconds, train_seconds, tokens_per_second, peak_memory_bytes, peak_memory_kind
(rss | cuda_max_allocated), device, world_size, dtypes, seed, final_loss, eval_loss, model, data, config,
versions, git_commit, git_dirty, resumed_from_step, created.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import platform
import subprocess
from pathlib import Path
from typing import Any

SCHEMA = "deltarank.train-run/1"
RUN_JSON = "run.json"
PACKAGES = ("deltarank", "torch", "transformers", "peft", "accelerate", "safetensors", "tokenizers", "gguf")
GIT_TIMEOUT_S = 5


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages a run depends on (None when missing), plus Python's."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit() -> tuple[str | None, bool | None]:
    """(commit, dirty) of the git checkout deltarank runs from, or (None, None) outside one."""
    root = Path(__file__).resolve().parents[2]

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(root), *args],
                capture_output=True,
                text=True,
                timeout=GIT_TIMEOUT_S,
                check=True,
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip()

    commit = git("rev-parse", "HEAD")
    if not commit:
        return None, None
    status = git("status", "--porcelain", "--untracked-files=no", "--", "deltarank")
    return commit, (bool(status) if status is not None else None)


def last_value(log_history: list[dict[str, Any]], key: str) -> float | None:
    """The newest value of `key` in a Trainer's log history."""
    for entry in reversed(log_history):
        if key in entry:
            return float(entry[key])
    return None


def build_run_record(**fields: Any) -> dict[str, Any]:
    """Assemble run.json from the measured fields; adds schema, versions, git commit and time.

    Expected keywords: method, trainable, total, tokens_seen, steps, wall_seconds, train_seconds,
    session_tokens, peak_memory_bytes, peak_memory_kind, device, world_size, dtypes, seed, final_loss,
    eval_loss, model, data, config, resumed_from_step.
    """
    commit, dirty = git_commit()
    trainable, total = fields.pop("trainable"), fields.pop("total")
    session_tokens = fields.pop("session_tokens")
    session_seconds = fields.pop("session_seconds")
    record: dict[str, Any] = {
        "schema": SCHEMA,
        "method": fields.pop("method"),
        "parameters": {
            "trainable": trainable,
            "total": total,
            "trainable_fraction": trainable / max(total, 1),
        },
        "tokens_per_second": session_tokens / session_seconds if session_seconds > 0 else None,
    }
    record.update(fields)
    record.update(
        versions=package_versions(),
        git_commit=commit,
        git_dirty=dirty,
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    )
    return record


def write_run_record(output_dir: Path, record: dict[str, Any]) -> Path:
    """Write run.json atomically and return its path."""
    from deltarank.analysis.results import write_atomic

    path = output_dir / RUN_JSON
    write_atomic(path, json.dumps(record, indent=2) + "\n")
    return path
