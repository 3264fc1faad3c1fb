"""Hugging Face repo ids as model arguments: `org/name` or `org/name@revision`, found in the local cache.

`resolve_path` turns what a user typed into a local path: an existing path is returned as it is; a repo id is
looked up in the Hugging Face cache (`HF_HUB_CACHE`, else `HF_HOME`/hub, else ~/.cache/huggingface/hub, read
when called, not when huggingface_hub was imported) with huggingface_hub's `snapshot_download(...,
local_files_only=True)`, which reads `refs/<branch or tag>` or takes a commit hash; nothing is downloaded. A repo
id that is not cached is an `InputError` saying how to fetch it. `download` is the only function that touches
the network (for `--download`), and it fetches safetensors, GGUF, JSON and tokenizer files only, never pickle
weights. The readers then open the snapshot directory like any other directory: safetensors or GGUF, and a
pickle-only snapshot is refused there.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from pathlib import Path

from deltarank.errors import DeltarankError, InputError

__all__ = [
    "ALLOW_PATTERNS",
    "download",
    "download_missing",
    "hub_cache_dir",
    "parse_repo_spec",
    "resolve_path",
]

log = logging.getLogger(__name__)

# What `download` fetches (and what a cached snapshot must hold completely): weights in safetensors or GGUF,
# configs, tokenizers. Never `*.bin`, `*.pt`, `*.pth`, `*.ckpt`, `*.pkl`: deltarank never unpickles.
ALLOW_PATTERNS = (
    "*.safetensors",
    "*.safetensors.index.json",
    "*.json",
    "*.gguf",
    "tokenizer*",
    "*.model",
    "*.txt",
)
# `org/name` with an optional `@revision` (a branch or tag, which may hold `/`, or a commit hash).
_SPEC = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?:@(?P<revision>\S+))?$")
# A missing `out/model.safetensors` is a mistyped file, not a repo id.
_FILE_SUFFIXES = (".safetensors", ".gguf", ".json", ".bin", ".pt", ".pth", ".ckpt", ".pkl")


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache, from the environment at call time, as huggingface_hub computes it.

    `HF_HUB_CACHE`, else the legacy `HUGGINGFACE_HUB_CACHE`, else `$HF_HOME/hub`, else
    `$XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`.
    """
    env = os.environ
    explicit = env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(os.path.expandvars(os.path.expanduser(explicit)))
    home = env.get("HF_HOME") or os.path.join(env.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")
    return Path(os.path.expandvars(os.path.expanduser(home))) / "hub"


def parse_repo_spec(spec: str | Path) -> tuple[str, str | None] | None:
    """`org/name` -> ("org/name", None); `org/name@rev` -> ("org/name", "rev"); anything else -> None.

    Only the syntax is checked (huggingface_hub's repo id rules included), not whether the repo exists.
    """
    match = _SPEC.match(str(spec))
    if match is None:
        return None
    repo_id, revision = match["repo"], match["revision"]
    if repo_id.lower().endswith(_FILE_SUFFIXES):
        return None
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        return None
    return repo_id, revision


def resolve_path(spec: str | Path) -> Path:
    """The local path for a model argument: an existing path as it is, or a cached repo's snapshot directory.

    Args:
        spec: A file or directory, or a Hugging Face repo id `org/name` / `org/name@revision` (branch, tag or
            commit hash).

    Returns:
        `Path(spec)` when it exists or is not a repo id (the caller then reports the missing path), else the
        snapshot directory `<cache>/models--org--name/snapshots/<commit>`.

    Raises:
        InputError: a repo id that is not in the local cache (or whose cached snapshot is incomplete).
    """
    path = Path(spec)
    if path.exists():
        return path
    parsed = parse_repo_spec(spec)
    if parsed is None:
        return path
    repo_id, revision = parsed
    cache = hub_cache_dir()
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(
            repo_id,
            revision=revision,
            cache_dir=cache,
            local_files_only=True,
            allow_patterns=list(ALLOW_PATTERNS),
        )
    except (OSError, ValueError) as exc:
        raise _not_cached(str(spec), repo_id, revision, cache, exc) from None
    log.info("%s: Hugging Face cache snapshot %s", spec, folder)
    return Path(str(folder))


def download(spec: str | Path) -> Path:
    """Fetch a repo id into the Hugging Face cache (`--download`) and return its snapshot directory.

    Only `ALLOW_PATTERNS` are fetched (safetensors, GGUF, JSON, tokenizer files), never pickle weights; files
    already cached are not fetched again (huggingface_hub asks the Hub for the revision's file list, and falls
    back to the cache when the Hub cannot be reached). An existing local path is returned as it is, with no
    network access.

    Raises:
        DeltarankError: not a local path nor a repo id, or the download failed (offline, unknown repo,
            gated repo without a token, ...).
    """
    path = Path(spec)
    if path.exists():
        return path
    parsed = parse_repo_spec(spec)
    if parsed is None:
        raise InputError(path, "no such file or directory (and not a Hugging Face repo id org/name)")
    repo_id, revision = parsed
    from huggingface_hub import snapshot_download

    log.info("downloading %s into %s", spec, hub_cache_dir())
    try:
        folder = snapshot_download(
            repo_id, revision=revision, cache_dir=hub_cache_dir(), allow_patterns=list(ALLOW_PATTERNS)
        )
    except (OSError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DeltarankError(f"{spec}: download failed ({type(exc).__name__}: {reason})") from None
    return Path(str(folder))


def download_missing(specs: Iterable[str | Path]) -> None:
    """`--download`: fetch every repo id among `specs` into the cache; paths that exist and arguments that are
    not repo ids are left alone (the readers report those as usual). Call it before the analysis, with the
    arguments as the user gave them, and keep passing those arguments on: they then resolve from the cache.

    Raises:
        DeltarankError: a download failed.
    """
    for spec in specs:
        if not Path(spec).exists() and parse_repo_spec(spec) is not None:
            download(spec)


def _not_cached(spec: str, repo_id: str, revision: str | None, cache: Path, exc: Exception) -> InputError:
    """The one-line error for a repo id that cannot be used from the cache."""
    fetch = f"`hf download {repo_id}" + (f" --revision {revision}`" if revision else "`")
    how = f"fetch it with {fetch} or rerun with --download"
    if type(exc).__name__ == "IncompleteSnapshotError":  # recent huggingface_hub only: matched by name
        return InputError(spec, f"the cached snapshot in {cache} is incomplete; {how}")
    repo_dir = cache / ("models--" + repo_id.replace("/", "--"))
    if revision and repo_dir.is_dir():
        refs = sorted(p.relative_to(repo_dir / "refs").as_posix() for p in (repo_dir / "refs").rglob("*"))
        refs = [r for r in refs if (repo_dir / "refs" / r).is_file()]
        cached = ", ".join(refs) if refs else "none"
        return InputError(
            spec,
            f"revision {revision!r} is not in the Hugging Face cache ({repo_dir}; cached refs: {cached}); {how}",
        )
    return InputError(spec, f"not a local path and not in the Hugging Face cache ({cache}); {how}")
